// Package notify speaks the sd_notify(3) datagram protocol in both directions:
// upstream to the service manager that started sockshim, and downstream as a
// per-worker proxy socket that workers report READY=1 and STATUS= to.
package notify
