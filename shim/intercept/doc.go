// Package intercept gives a worker that binds its own port the socket
// sockshim holds for that address, so that a server which knows nothing of
// socket activation (nginx, Node.js, a static Go binary) is reloaded like one
// that does.
//
// # The protocol
//
// With intercept_bind = true, the supervisor sends the trampoline a handoff
// of no sockets with wire.FlagInterceptBind. Before it execs the worker, the
// trampoline installs a seccomp filter (handoff/trampoline's bindFilter)
// that turns the native bind(2) and listen(2) of the worker, and of every
// process it forks or execs, into user notifications, and sends the
// filter's listener back over the handoff socket. Serve answers them:
//
//   - bind(fd, addr, len): sockshim reads the address from the worker's
//     memory (process_vm_readv) and the socket's protocol from its
//     descriptor (the sockfs xattr system.sockprotoname of /proc/TID/fd/FD),
//     and decides with Match. A held socket that matches is installed at fd
//     in the worker's descriptor table with SECCOMP_IOCTL_NOTIF_ADDFD and
//     SECCOMP_ADDFD_FLAG_SETFD, which replaces the worker's own socket as
//     dup2 would, and the call returns 0. Anything else proceeds as the
//     program asked (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
//   - listen(fd, backlog) on a held socket returns 0 and leaves the socket
//     as it is: its backlog is the one the [[listen]] entry or the .socket
//     unit set. Any other listen proceeds.
//
// # What a hostile worker can do
//
// Nothing it could not do without sockshim. It can obtain only the sockets
// of its own group, the ones LISTEN_FDS would have given it. The decision is
// taken from sockshim's own copy of the address, read once; a worker that
// changes the memory afterwards (another thread, during the check) changes
// only what a call that proceeds binds, and that call is the kernel's, with
// the worker's own privileges. SECCOMP_IOCTL_NOTIF_ID_VALID after the reads
// makes sure they were of the process that is still waiting in the call,
// not of one that died and whose pid was reused. The worker cannot answer
// its own calls: the listener never reaches it (the trampoline closes its
// copy before exec).
//
// # What cannot hang
//
// A call waits only while Serve works on it: a few system calls, on a
// goroutine of its own per worker, which takes no lock the supervisor's
// loop holds, so a slow reload or a stop does not delay it. When sockshim
// dies, the kernel fails every waiting and later call with ENOSYS; workers
// die with sockshim anyway (their parent-death signal). Serve returns once
// no process has the filter any more (the listener reports a hang-up) or
// when its listener is closed.
package intercept
