// Package handoff passes named listening sockets from sockshim to a freshly
// started worker: a small versioned wire protocol over an AF_UNIX
// SOCK_SEQPACKET socket with SCM_RIGHTS (package wire), sent and received
// here as *os.File, and the trampoline (package trampoline) that turns the
// received sockets into the systemd socket-activation environment
// (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID) before exec'ing the worker. The
// trampoline is its own small binary, sockshim-handoff (cmd/sockshim-handoff),
// which the supervisor finds and opens once (OpenBinary); sockshim's own
// binary is the fallback.
package handoff
