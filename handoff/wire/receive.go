package wire

import (
	"errors"
	"strconv"
	"syscall"
)

// Receive reads one complete handoff from the SOCK_SEQPACKET socket c and
// returns the descriptors and their names, in the order sent, and the
// handoff's flags. The
// descriptors are close-on-exec (MSG_CMSG_CLOEXEC: no window in which an
// exec elsewhere in the process could inherit them). On any error every
// descriptor received so far is closed and none is returned, so a bad peer
// can never leak fds into this process.
func Receive(c int) (fds []int, names []string, flags byte, err error) {
	fds, names, flags, err = receive(c)
	if err != nil {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return nil, nil, 0, err
	}
	return fds, names, flags, nil
}

// receive does the work of Receive. It returns the fds it collected even on
// error, for Receive to close.
func receive(c int) ([]int, []string, byte, error) {
	buf := heapBytes(maxPayload + 1)
	oob := make([]byte, syscall.CmsgSpace(MaxFDsPerMessage*4))
	var (
		fds    []int
		names  []string
		total  = -1
		hflags byte
	)
	for msg := 1; total < 0 || len(fds) < total; msg++ {
		m := "message " + itoa(msg)
		n, oobn, flags, err := recvmsg(c, buf, oob)
		if err != nil {
			return fds, nil, 0, wrap(m, err)
		}
		got, perr := parseRights(oob[:oobn])
		fds = append(fds, got...)
		switch {
		case flags&syscall.MSG_CTRUNC != 0:
			return fds, nil, 0, errors.New(m + ": control data truncated (MSG_CTRUNC): descriptors were lost")
		case flags&syscall.MSG_TRUNC != 0:
			return fds, nil, 0, errors.New(m + ": payload truncated (MSG_TRUNC)")
		case perr != nil:
			return fds, nil, 0, wrap(m, perr)
		case n == 0 && oobn == 0:
			if total < 0 {
				return fds, nil, 0, errors.New("peer closed before sending anything")
			}
			return fds, nil, 0, errors.New("peer closed after " + itoa(len(names)) + " of " + itoa(total) + " sockets")
		}
		h, err := decode(buf[:n])
		if err != nil {
			return fds, nil, 0, wrap(m, err)
		}
		if len(got) != len(h.names) {
			return fds, nil, 0, errors.New(m + " carries " + itoa(len(got)) + " descriptors, header says " + itoa(len(h.names)))
		}
		if total < 0 {
			total, hflags = h.total, h.flags
		} else if h.total != total {
			return fds, nil, 0, errors.New(m + " says the total is " + itoa(h.total) + ", message 1 said " + itoa(total))
		} else if h.flags != hflags {
			return fds, nil, 0, errors.New(m + " has flags 0x" + strconv.FormatUint(uint64(h.flags), 16) + ", message 1 had 0x" + strconv.FormatUint(uint64(hflags), 16))
		}
		if h.first != len(names) {
			return fds, nil, 0, errors.New(m + " starts at socket " + itoa(h.first) + ", expected " + itoa(len(names)))
		}
		names = append(names, h.names...)
	}
	return fds, names, hflags, nil
}

func recvmsg(c int, buf, oob []byte) (n, oobn, flags int, err error) {
	for {
		n, oobn, flags, _, err = syscall.Recvmsg(c, buf, oob, syscall.MSG_CMSG_CLOEXEC)
		if err != syscall.EINTR {
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
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, wrap("control message", err)
	}
	var fds []int
	var errs []error
	for i := range msgs {
		if msgs[i].Header.Level != syscall.SOL_SOCKET || msgs[i].Header.Type != syscall.SCM_RIGHTS {
			errs = append(errs, errors.New("unexpected control message level "+itoa(int(msgs[i].Header.Level))+" type "+itoa(int(msgs[i].Header.Type))))
			continue
		}
		got, err := syscall.ParseUnixRights(&msgs[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fds = append(fds, got...)
	}
	return fds, errors.Join(errs...)
}

// heapBytes is make([]byte, n) kept off the stack. A 64 KB local is zeroed
// in the frame, which costs the trampoline 16 page faults and a stack
// growth; fresh heap pages stay untouched until the kernel writes the
// payload into them.
//
//go:noinline
func heapBytes(n int) []byte { return make([]byte, n) }
