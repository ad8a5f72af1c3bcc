package intercept

import (
	"errors"
	"log/slog"
	"os"
	"strconv"
	"syscall"

	"github.com/sockshim/sockshim/internal/procfs"
	"golang.org/x/sys/unix"
)

// Server answers the bind and listen calls of one worker's process tree.
type Server struct {
	worker string // "web[0]", for logs
	held   []Held
	ends   []Endpoint // held's endpoints, for Match
	log    *slog.Logger
	// nearMisses holds the addresses already logged as almost right, so that
	// a server that retries its bind does not flood the log.
	nearMisses map[Endpoint]bool
	// lostFiles holds the unix sockets whose file a worker removed, logged
	// once each.
	lostFiles map[string]bool
	// handedOver counts binds answered with a held socket.
	handedOver int
}

// NewServer prepares to answer for worker, which may be given the sockets
// held (its group's).
func NewServer(worker string, held []Held, log *slog.Logger) *Server {
	return &Server{worker: worker, held: held, ends: Endpoints(held), log: log, nearMisses: map[Endpoint]bool{}, lostFiles: map[string]bool{}}
}

// Serve answers the calls the filter whose listener this is sends, until
// no process has the filter any more; it takes listener over and closes it.
// The listener waits on the runtime's poller, so a worker that never binds
// costs no thread.
func (s *Server) Serve(listener *os.File) {
	listener, err := pollable(listener)
	if err == nil {
		defer listener.Close()
	}
	var rc syscall.RawConn
	if err == nil {
		rc, err = listener.SyscallConn()
	}
	if err != nil {
		s.log.Error("intercept_bind: cannot wait on the bind filter's listener; the worker's binds fail with ENOSYS", "worker", s.worker, "err", err)
		return
	}
	for {
		var n notif
		var rerr error
		hangup := false
		err := rc.Read(func(fd uintptr) bool {
			ready, hup := pending(int(fd))
			switch {
			case ready:
				n, rerr = recv(int(fd))
				return true
			case hup:
				hangup = true
				return true
			}
			return false // woken without a call waiting: wait again
		})
		switch {
		case err != nil || hangup:
			return // closed, or every process with the filter is gone
		case errors.Is(rerr, unix.ENOENT):
			continue // the caller was killed before the call was taken
		case rerr != nil:
			s.log.Error("intercept_bind: receiving a call from the bind filter", "worker", s.worker, "err", rerr)
			return
		}
		if err := rc.Control(func(fd uintptr) { s.answer(int(fd), &n) }); err != nil {
			return
		}
	}
}

// pollable returns f, a descriptor received in blocking mode, as a
// non-blocking file the runtime polls (os.NewFile decides that once, from
// the descriptor's mode), and closes f.
func pollable(f *os.File) (*os.File, error) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		if nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); derr == nil {
			derr = unix.SetNonblock(nfd, true)
		}
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		if nfd >= 0 {
			unix.Close(nfd)
		}
		return nil, derr
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// pending polls the listener without waiting: a call waits to be taken, or
// the filter has no process left.
func pending(fd int) (ready, hup bool) {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(p, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, true
		}
		return p[0].Revents&unix.POLLIN != 0, p[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	}
}

// answer carries out one call's decision. Whatever it could not read or do
// lets the call proceed, so the program meets the kernel's own answer
// rather than sockshim's guess; a reply that fails means the caller is gone.
func (s *Server) answer(listener int, n *notif) {
	tid, fd := int(n.pid), int(int32(n.args[0]))
	var err error
	switch uintptr(n.nr) {
	case unix.SYS_BIND:
		err = s.bind(listener, n, tid, fd)
	case unix.SYS_LISTEN:
		err = s.listen(listener, n, tid, fd)
	default:
		err = proceed(listener, n.id)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		s.log.Warn("intercept_bind: answering a call", "worker", s.worker, "pid", tid, "call", n.nr, "err", err)
	}
}

func (s *Server) bind(listener int, n *notif, tid, fd int) error {
	asked, ok := s.readBind(tid, fd, uintptr(n.args[1]), int(uint32(n.args[2])))
	if !ok || !idValid(listener, n.id) {
		return proceed(listener, n.id)
	}
	d := Match(asked, s.ends)
	switch d.Verdict {
	case NearMiss:
		if !s.nearMisses[asked] {
			s.nearMisses[asked] = true
			s.log.Warn("intercept_bind: the worker binds an address sockshim does not hold, on the port of one it does; it gets a socket of its own (the bind may fail with EADDRINUSE)",
				"worker", s.worker, "pid", tid, "asked", asked.String(), "held", endpoints(s.held))
		}
		return proceed(listener, n.id)
	case Proceed:
		return proceed(listener, n.id)
	}
	h := s.held[d.Socket]
	if err := s.handOver(listener, n.id, tid, fd, h); err != nil {
		return err
	}
	s.handedOver++
	s.checkFile(tid, h)
	s.log.Info("intercept_bind: bind answered with a held socket", "worker", s.worker, "pid", tid, "fd", fd,
		"asked", asked.String(), "socket", h.Name, "address", h.Endpoint.String())
	return nil
}

// checkFile reports a held unix socket whose file is no longer the one it
// was bound to. Servers commonly remove a stale socket file before they
// bind (Python's asyncio, gunicorn); here that file was sockshim's socket,
// and with it gone, no client can connect to the path, whatever the bind
// then returned. Nothing brings a removed name back to a bound socket.
func (s *Server) checkFile(tid int, h Held) {
	if h.file == (fileID{}) || s.lostFiles[h.Name] {
		return
	}
	if now, ok := statFile(h.Endpoint.Path); ok && now == h.file {
		return
	}
	s.lostFiles[h.Name] = true
	s.log.Error("intercept_bind: the worker removed or replaced the held socket's file before its bind; clients connecting to the path no longer reach the socket: stop the server from removing its socket file, then restart the service",
		"worker", s.worker, "pid", tid, "socket", h.Name, "path", h.Endpoint.Path)
}

// readBind reads what bind(fd, addr, addrlen) of tid asks for.
func (s *Server) readBind(tid, fd int, addr uintptr, addrlen int) (Endpoint, bool) {
	if addrlen < 2 || addrlen > maxSockaddr || fd < 0 {
		return Endpoint{}, false // the kernel refuses it (EINVAL, EBADF)
	}
	proto, err := sockProto(tid, fd)
	if err != nil {
		s.log.Debug("intercept_bind: not a socket sockshim can read", "worker", s.worker, "pid", tid, "fd", fd, "err", err)
		return Endpoint{}, false
	}
	e, ok := protoEndpoint(proto)
	if !ok {
		return Endpoint{}, false
	}
	sa, err := procfs.ReadMemory(tid, addr, addrlen)
	if err != nil {
		s.log.Debug("intercept_bind: cannot read the address of a bind", "worker", s.worker, "pid", tid, "err", err)
		return Endpoint{}, false
	}
	return parseSockaddr(e, sa, func() (string, error) { return os.Readlink("/proc/" + strconv.Itoa(tid) + "/cwd") })
}

// handOver puts h at fd of tid and ends the bind with 0. The worker's socket
// there is closed by the replacement. O_CLOEXEC is the worker's own
// choice for its descriptor, and kept. O_NONBLOCK belongs to the socket's
// open file description, which every process holding the socket shares: it
// is set as the worker's own socket had it, because the worker's code
// (a blocking accept, or an event loop) is written for that mode, and
// the workers of one group are the same program.
func (s *Server) handOver(listener int, id uint64, tid, fd int, h Held) error {
	flags, err := fdFlags(tid, fd)
	if err != nil {
		return proceed(listener, id)
	}
	rc, err := h.File.SyscallConn()
	if err != nil {
		return proceed(listener, id)
	}
	var ierr error
	cerr := rc.Control(func(src uintptr) {
		if ierr = matchNonblock(int(src), flags&unix.O_NONBLOCK != 0); ierr != nil {
			return
		}
		ierr = installAt(listener, id, int(src), fd, flags&unix.O_CLOEXEC != 0)
	})
	if cerr != nil {
		ierr = cerr
	}
	if ierr != nil {
		if errors.Is(ierr, unix.ENOENT) {
			return ierr // the caller is gone
		}
		// The socket stays the worker's own; let the kernel answer.
		s.log.Warn("intercept_bind: could not give the worker the held socket", "worker", s.worker, "pid", tid, "socket", h.Name, "err", ierr)
		return proceed(listener, id)
	}
	return reply(listener, id, 0, 0)
}

// matchNonblock sets or clears O_NONBLOCK on fd's open file description.
func matchNonblock(fd int, nonblock bool) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	want := fl &^ unix.O_NONBLOCK
	if nonblock {
		want |= unix.O_NONBLOCK
	}
	if want == fl {
		return nil
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, want)
	return err
}

// listen on a held stream socket returns 0 at once: it listens already,
// and a listen(2) of the worker's would set its backlog for every
// generation. Any other listen proceeds.
func (s *Server) listen(listener int, n *notif, tid, fd int) error {
	ino, ok := socketIno(tid, fd)
	if !ok {
		s.log.Debug("intercept_bind: listen on a descriptor sockshim cannot read", "worker", s.worker, "pid", tid, "fd", fd)
	}
	if ok && idValid(listener, n.id) {
		for _, h := range s.held {
			if h.Ino == ino && h.Endpoint.Kind != Datagram {
				return reply(listener, n.id, 0, 0)
			}
		}
	}
	return proceed(listener, n.id)
}
