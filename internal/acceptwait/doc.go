// Package acceptwait tells, from /proc alone, whether a process waits for
// connections on a listening socket: ready = "accepting" for servers that
// send no READY=1.
//
// A socket counts as waited on when one of the processes looked at has a
// thread blocked in accept(2) or accept4(2) on it, or has it in an epoll
// set, or has a thread blocked in poll(2), ppoll(2), select(2) or
// pselect6(2) with it among the descriptors read for input. The first two
// are read from the kernel's own accounts (/proc/PID/task/TID/syscall, the
// tfd: lines of an epoll descriptor's fdinfo); the poll and select sets are
// copied out of the thread's memory while it is blocked, which is a race
// the process may win, so a set read mid-change counts as no wait.
//
// Where it can be wrong, so that a caller says so to its users:
//   - A server that adds its socket to an epoll set before it can answer
//     (Go's runtime does so when the listener is made, long before the
//     program calls Accept) is seen as accepting early. Connections then
//     wait in the socket's queue, they are not refused.
//   - Waiting says nothing of what the server answers: one that accepts and
//     then fails every request is still seen as accepting.
//   - io_uring accepts leave no trace in /proc, and a thread that is
//     between two calls at the moment of the reading is not seen waiting:
//     the caller reads again.
//
// Reading another process's syscall file and memory needs ptrace access to
// it: the same user, not restricted by kernel.yama.ptrace_scope beyond
// descendants, or CAP_SYS_PTRACE.
package acceptwait
