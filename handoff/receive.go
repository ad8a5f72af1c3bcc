package handoff

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Receive reads one complete handoff from conn. The descriptors it returns
// are close-on-exec (MSG_CMSG_CLOEXEC: no window in which an exec elsewhere
// in the process could inherit them). On any error every descriptor received
// so far is closed and nil is returned, so a bad peer can never leak fds
// into this process.
func Receive(conn *os.File) ([]Socket, error) {
	var socks []Socket
	var fds []int
	err := withRawFD(conn, func(c int) error {
		var err error
		socks, fds, err = receive(c)
		return err
	})
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("handoff: %w", err)
	}
	return socks, nil
}

// receive does the work of Receive on a raw descriptor. It returns the fds
// it collected even on error, for the caller to close.
func receive(c int) ([]Socket, []int, error) {
	buf := make([]byte, maxPayload+1)
	oob := make([]byte, unix.CmsgSpace(MaxFDsPerMessage*4))
	var (
		fds   []int
		names []string
		total = -1
	)
	for msg := 1; total < 0 || len(fds) < total; msg++ {
		n, oobn, flags, _, err := recvmsg(c, buf, oob)
		if err != nil {
			return nil, fds, fmt.Errorf("message %d: %w", msg, err)
		}
		got, perr := parseRights(oob[:oobn])
		fds = append(fds, got...)
		switch {
		case flags&unix.MSG_CTRUNC != 0:
			return nil, fds, fmt.Errorf("message %d: control data truncated (MSG_CTRUNC): descriptors were lost", msg)
		case flags&unix.MSG_TRUNC != 0:
			return nil, fds, fmt.Errorf("message %d: payload truncated (MSG_TRUNC)", msg)
		case perr != nil:
			return nil, fds, fmt.Errorf("message %d: %w", msg, perr)
		case n == 0 && oobn == 0:
			if total < 0 {
				return nil, fds, errors.New("peer closed before sending anything")
			}
			return nil, fds, fmt.Errorf("peer closed after %d of %d sockets", len(names), total)
		}
		h, err := decode(buf[:n])
		if err != nil {
			return nil, fds, fmt.Errorf("message %d: %w", msg, err)
		}
		if len(got) != len(h.names) {
			return nil, fds, fmt.Errorf("message %d carries %d descriptors, header says %d", msg, len(got), len(h.names))
		}
		if total < 0 {
			total = h.total
		} else if h.total != total {
			return nil, fds, fmt.Errorf("message %d says the total is %d, message 1 said %d", msg, h.total, total)
		}
		if h.first != len(names) {
			return nil, fds, fmt.Errorf("message %d starts at socket %d, expected %d", msg, h.first, len(names))
		}
		names = append(names, h.names...)
	}
	socks := make([]Socket, len(fds))
	for i, fd := range fds {
		socks[i] = Socket{Name: names[i], File: os.NewFile(uintptr(fd), names[i])}
	}
	return socks, fds, nil
}

func recvmsg(c int, buf, oob []byte) (n, oobn, flags int, from unix.Sockaddr, err error) {
	for {
		n, oobn, flags, from, err = unix.Recvmsg(c, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			return
		}
	}
}

// parseRights returns every descriptor in the control messages. It keeps
// going past a malformed message so that whatever did arrive can be closed.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var fds []int
	var errs []error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			errs = append(errs, fmt.Errorf("unexpected control message level %d type %d", msgs[i].Header.Level, msgs[i].Header.Type))
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fds = append(fds, got...)
	}
	return fds, errors.Join(errs...)
}
