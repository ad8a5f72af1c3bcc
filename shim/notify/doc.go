// Package notify speaks the sd_notify(3) datagram protocol in both directions:
// upstream to the service manager that started sockshim, and downstream as a
// per-worker proxy socket that workers report READY=1 and STATUS= to.
//
// A worker's socket is a file in notify.PID in sockshim's runtime directory
// (/run/sockshim for root), writable only by sockshim's uid and the worker's;
// datagrams from outside the worker's process group are dropped unparsed and
// logged as a count, at most once per ReportInterval.
package notify
