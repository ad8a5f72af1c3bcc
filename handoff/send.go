package handoff

import (
	"fmt"
	"os"

	"github.com/sockshim/sockshim/handoff/wire"
	"golang.org/x/sys/unix"
)

// Pair returns a connected AF_UNIX SOCK_SEQPACKET pair, both ends
// close-on-exec. The child end is meant for exec.Cmd.ExtraFiles, which
// clears close-on-exec on the copy the child gets.
func Pair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "handoff-parent"), os.NewFile(uintptr(fds[1]), "handoff-child"), nil
}

// Send writes socks over conn, a SOCK_SEQPACKET unix socket, in messages of
// at most wire.MaxFDsPerMessage descriptors, each with flags (wire.Flag…).
//
// It never calls (*os.File).Fd on a socket: Fd switches the open file
// description to blocking mode, for every process sharing it. The raw
// descriptors are borrowed inside RawConn.Control instead, which also keeps
// each file from being closed while it is borrowed.
func Send(conn *os.File, flags byte, socks []Socket) error {
	names := make([]string, len(socks))
	for i, s := range socks {
		if err := CheckName(s.Name); err != nil {
			return fmt.Errorf("handoff: socket %d: %w", i, err)
		}
		if s.File == nil {
			return fmt.Errorf("handoff: socket %d (%s): no file", i, s.Name)
		}
		names[i] = s.Name
	}
	if len(socks) > wire.MaxSockets {
		return fmt.Errorf("handoff: %d sockets exceed the limit of %d", len(socks), wire.MaxSockets)
	}
	return withRawFDs(socks, func(fds []int) error {
		return withRawFD(conn, func(c int) error {
			for first := 0; first == 0 || first < len(fds); first += wire.MaxFDsPerMessage {
				end := min(first+wire.MaxFDsPerMessage, len(fds))
				payload := wire.Encode(flags, len(fds), first, names[first:end])
				var oob []byte
				if end > first {
					oob = unix.UnixRights(fds[first:end]...)
				}
				if err := unix.Sendmsg(c, payload, oob, nil, unix.MSG_NOSIGNAL); err != nil {
					return fmt.Errorf("handoff: sending sockets %d..%d: %w", first, end, err)
				}
				if len(fds) == 0 {
					break
				}
			}
			return nil
		})
	})
}

// withRawFDs borrows the descriptors of every socket at once by nesting
// RawConn.Control calls, then runs f with them.
func withRawFDs(socks []Socket, f func([]int) error) error {
	fds := make([]int, 0, len(socks))
	var borrow func(i int) error
	borrow = func(i int) error {
		if i == len(socks) {
			return f(fds)
		}
		return withRawFD(socks[i].File, func(fd int) error {
			fds = append(fds, fd)
			return borrow(i + 1)
		})
	}
	return borrow(0)
}

func withRawFD(f *os.File, use func(int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("handoff: %s: %w", f.Name(), err)
	}
	var uerr error
	if err := rc.Control(func(fd uintptr) { uerr = use(int(fd)) }); err != nil {
		return fmt.Errorf("handoff: %s: %w", f.Name(), err)
	}
	return uerr
}
