package sockets

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/sockshim/sockshim/handoff"
	"golang.org/x/sys/unix"
)

// A held socket is one socket in the kernel, shared by sockshim, every
// worker and, when socket-activated, the service manager: shutdown(2) by any
// one of them acts on it for all. A worker that "stops" its listener that way
// (a common idiom to wake a thread blocked in accept, or a careless graceful
// stop) ends accepting for the whole service, every later generation
// included. A TCP listener survives it: shutdown leaves the socket bound, in
// state CLOSE, and listen(2) makes it accept again, though the connections
// queued on it at that moment were reset. No call undoes the shutdown of a
// unix listener (it refuses every connection) or of a datagram socket (its
// reads return at once, empty, instead of waiting); only a new socket
// repairs those.

// errStaysShut is why a shut-down socket other than a TCP listener is not
// repaired.
var errStaysShut = errors.New("no call undoes the shutdown of a unix or datagram socket: a unix listener refuses every connection, and reads of a datagram socket return at once, empty, instead of waiting")

// Shutdown is a held socket found shut down by a process that shares it.
type Shutdown struct {
	Name string
	// Relistened: it was a TCP listener and accepts again, with Backlog.
	Relistened bool
	Backlog    int
	// Err says why it could not be repaired.
	Err error
}

// Watcher follows the held sockets for a shutdown and repairs what it can.
type Watcher struct {
	epoll *os.File
	socks []*watched
	done  chan struct{}
}

type watched struct {
	handoff.Socket
	tcpListener bool
	backlog     int
	// Reported shutdowns, and how many of them were repaired.
	shutdowns, relistened atomic.Int64
}

// Count is what a Watcher saw of one socket.
type Count struct {
	Name                  string
	Shutdowns, Relistened int
}

// Counts returns, for every watched socket in order, its shutdowns so far
// and how many of them it repaired. A nil Watcher has none.
func (w *Watcher) Counts() []Count {
	if w == nil {
		return nil
	}
	out := make([]Count, len(w.socks))
	for i, s := range w.socks {
		out[i] = Count{Name: s.Name, Shutdowns: int(s.shutdowns.Load()), Relistened: int(s.relistened.Load())}
	}
	return out
}

// Watch starts following socks. backlogs gives the listen(2) backlog to
// restore a TCP listener with, by socket name (the [[listen]] entry's);
// sockets without one get the kernel's largest, systemd's default too.
// report is called, from the Watcher's own goroutine, once per shutdown.
//
// Each socket is registered in an epoll set of its own for hang-ups only,
// not for readability: the kernel filters out the wake-ups of incoming
// connections and datagrams in the socket's wait queue, so a busy socket
// costs sockshim nothing, and a shutdown is seen at once.
func Watch(socks []handoff.Socket, backlogs map[string]int, report func(Shutdown)) (*Watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// Non-blocking, so that the runtime's poller waits for the set to have
	// an event instead of a thread blocking in epoll_wait.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	w := &Watcher{epoll: os.NewFile(uintptr(epfd), "held-sockets-epoll"), done: make(chan struct{})}
	for i, s := range socks {
		ws := &watched{Socket: s, backlog: backlogs[s.Name]}
		if ws.backlog <= 0 {
			ws.backlog = defaultBacklog
		}
		err := control(s.File, func(fd int) error {
			ws.tcpListener = isTCPListener(fd)
			ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(i)}
			return unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev)
		})
		if err != nil {
			w.epoll.Close()
			return nil, fmt.Errorf("watching socket %q: %w", s.Name, err)
		}
		w.socks = append(w.socks, ws)
	}
	if len(w.socks) == 0 {
		close(w.done) // nothing to wait for; epoll_wait would refuse an empty buffer
		return w, nil
	}
	raw, err := w.epoll.SyscallConn()
	if err != nil {
		w.epoll.Close()
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	go w.run(raw, report)
	return w, nil
}

// Close stops watching and waits for report to have returned.
func (w *Watcher) Close() {
	w.epoll.Close()
	<-w.done
}

func (w *Watcher) run(raw syscall.RawConn, report func(Shutdown)) {
	defer close(w.done)
	events := make([]unix.EpollEvent, len(w.socks))
	for {
		var n int
		var werr error
		err := raw.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			if werr == unix.EINTR {
				n, werr = 0, nil
			}
			return n > 0 || werr != nil
		})
		if err != nil || werr != nil {
			return // closed: epoll_wait on a live set with room for events does not fail
		}
		for _, ev := range events[:n] {
			s := w.socks[ev.Fd]
			if sd, ok := s.check(); ok {
				s.shutdowns.Add(1)
				if sd.Relistened {
					s.relistened.Add(1)
				}
				report(sd)
			}
		}
	}
}

// check looks at a socket the kernel reported a hang-up for, and listens on
// it again when that repairs it.
func (s *watched) check() (Shutdown, bool) {
	sd := Shutdown{Name: s.Name}
	var shut bool
	err := control(s.File, func(fd int) error {
		if s.tcpListener && !accepting(fd) {
			shut = true
			if err := unix.Listen(fd, s.backlog); err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			sd.Relistened, sd.Backlog = true, s.backlog
		}
		if hungUp(fd) {
			shut = true
			return errStaysShut
		}
		return nil
	})
	sd.Err = err
	return sd, shut
}

// control runs fn on f's descriptor without changing its blocking mode, as
// Fd would.
func control(f *os.File, fn func(fd int) error) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func isTCPListener(fd int) bool {
	domain, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	return (domain == unix.AF_INET || domain == unix.AF_INET6) && typ == unix.SOCK_STREAM && accepting(fd)
}

func accepting(fd int) bool {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && v == 1
}

// hungUp reports whether fd is shut down for reading: POLLRDHUP for one
// direction, POLLHUP for both (and for a TCP listener that is not listening).
func hungUp(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	if n, err := unix.Poll(p, 0); err != nil || n == 0 {
		return false
	}
	return p[0].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0
}
