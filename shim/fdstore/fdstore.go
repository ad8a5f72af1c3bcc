// Package fdstore keeps descriptors in the service manager's file
// descriptor store (FDSTORE=1 on the notify socket, as
// sd_pid_notify_with_fds(3) sends it), so that they come back, by name,
// through LISTEN_FDS when the service starts again after a crash or a
// restart. The unit must allow it with FileDescriptorStoreMax=.
//
// Stored descriptors are not polled (FDPOLL=0). systemd would otherwise
// drop a listening socket from the store the moment a process shut it down
// (it then reports EPOLLHUP); sockshim listens on such a socket again
// (sockets.Watch), and it must still be in the store after a crash.
package fdstore

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Store is the fd store of the manager that started sockshim.
type Store struct {
	addr string // NOTIFY_SOCKET: a path, or "@name" for an abstract one
}

// FromEnv returns the store of the manager named by NOTIFY_SOCKET, or nil
// when there is none: a standalone run has nowhere to keep anything, and a
// nil Store's methods do nothing.
func FromEnv() *Store {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	return &Store{addr: addr}
}

// Add stores f under name. systemd keeps a second copy if name is stored
// already: Remove it first to replace it.
func (s *Store) Add(name string, f *os.File) error {
	if s == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("fd store at %s: %s: %w", s.addr, name, err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = s.send("FDSTORE=1\nFDNAME="+name+"\nFDPOLL=0", unix.UnixRights(int(fd)))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("fd store at %s: storing %s: %w", s.addr, name, err)
	}
	return nil
}

// Remove drops every descriptor stored under name.
func (s *Store) Remove(name string) error {
	if s == nil {
		return nil
	}
	if err := s.send("FDSTOREREMOVE=1\nFDNAME="+name, nil); err != nil {
		return fmt.Errorf("fd store at %s: removing %s: %w", s.addr, name, err)
	}
	return nil
}

// send writes one datagram to the manager, with oob as its control data.
func (s *Store) send(state string, oob []byte) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	name := s.addr
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	}
	return unix.Sendmsg(fd, []byte(state), oob, &unix.SockaddrUnix{Name: name}, 0)
}
