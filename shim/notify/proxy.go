package notify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sockshim/sockshim/internal/unixaddr"
	"golang.org/x/sys/unix"
)

// ReportInterval is how often a proxy reports datagrams it dropped: the
// first one at once, then at most one summary per interval.
const ReportInterval = 10 * time.Second

// Errors a Rejection carries besides Parse's.
var (
	ErrSender    = errors.New("sender is outside the worker's process group")
	ErrTooLarge  = fmt.Errorf("datagram larger than %d bytes", MaxDatagram)
	ErrTruncated = errors.New("datagram with truncated ancillary data")
)

// Proxy is a notify socket for one worker. The worker finds its path in
// NOTIFY_SOCKET; sockshim reads what it sends and decides what to forward.
//
// The socket file (mode 0600) is writable only by sockshim's uid and the
// worker's, so no other user can send to it. Every datagram still carries
// the sender's credentials (SO_PASSCRED), and Serve's caller decides whom to
// believe among those who can.
type Proxy struct {
	conn      *net.UnixConn
	path      string
	interval  time.Duration
	closeOnce sync.Once
}

// Rejection sums up the datagrams a proxy dropped since its last report.
type Rejection struct {
	Count int   // datagrams dropped
	PID   int   // sender of the last one, 0 if unknown
	Err   error // why the last one was dropped
}

// Listen opens the notify socket of a worker whose processes run as uid,
// named name in sockshim's notify directory.
func Listen(name string, uid int) (*Proxy, error) {
	dir, err := acquireDir()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	p, err := listen(path, uid)
	if err != nil {
		releaseDir()
		return nil, fmt.Errorf("notify socket %s: %w", path, err)
	}
	return p, nil
}

func listen(path string, uid int) (*Proxy, error) {
	if len(path) > unixaddr.MaxPath {
		return nil, fmt.Errorf("%d bytes, longer than a unix socket address allows (%d)", len(path), unixaddr.MaxPath)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	p := &Proxy{conn: conn, path: path, interval: ReportInterval}
	// The umask is process-wide, so the mode is set after bind; until the
	// worker starts, nobody else knows the path.
	err = os.Chmod(path, 0o600)
	if err == nil && uid != os.Getuid() {
		err = allowUser(path, uid)
	}
	if err == nil {
		err = setPassCred(conn)
	}
	if err != nil {
		conn.Close()
		os.Remove(path)
		return nil, err
	}
	return p, nil
}

func setPassCred(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("SO_PASSCRED: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		return fmt.Errorf("SO_PASSCRED: %w", errors.Join(err, serr))
	}
	return nil
}

// Addr is the value for the worker's NOTIFY_SOCKET.
func (p *Proxy) Addr() string { return p.path }

// Close stops Serve and removes the socket file. Calls after the first do
// nothing.
func (p *Proxy) Close() error {
	var err error
	p.closeOnce.Do(func() {
		err = p.conn.Close()
		if rerr := os.Remove(p.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		releaseDir()
	})
	return err
}

// Serve reads datagrams until the proxy is closed. A datagram from a sender
// that accept refuses is dropped before it is parsed; handle gets each
// well-formed one from an accepted sender. Dropped datagrams are counted, and
// report gets the count: at once for the first, then at most once per
// ReportInterval while more arrive, so that a flood costs a bounded number
// of reports. File descriptors a sender attaches (FDSTORE=1) are closed at
// once: sockshim stores none for workers.
func (p *Proxy) Serve(accept func(pid int) bool, handle func(Message), report func(Rejection)) {
	buf := make([]byte, MaxDatagram+1)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*253))
	var pending Rejection
	quiet := true // no report within the last interval
	drop := func(pid int, err error) {
		if quiet {
			report(Rejection{Count: 1, PID: pid, Err: err})
			quiet = false
			_ = p.conn.SetReadDeadline(time.Now().Add(p.interval))
			return
		}
		pending.Count++
		pending.PID, pending.Err = pid, err
	}
	for {
		n, oobn, flags, _, err := p.conn.ReadMsgUnix(buf, oob)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			// An interval ended: report what it dropped, or fall quiet.
			if pending.Count == 0 {
				quiet = true
				_ = p.conn.SetReadDeadline(time.Time{})
				continue
			}
			report(pending)
			pending = Rejection{}
			_ = p.conn.SetReadDeadline(time.Now().Add(p.interval))
			continue
		case errors.Is(err, net.ErrClosed):
			if pending.Count > 0 {
				report(pending)
			}
			return
		case err != nil:
			drop(0, fmt.Errorf("read: %w", err))
			continue
		}
		pid := closeRightsAndGetPID(oob[:oobn])
		switch {
		case !accept(pid):
			drop(pid, ErrSender)
		case flags&unix.MSG_TRUNC != 0 || n > MaxDatagram:
			drop(pid, ErrTooLarge)
		case flags&unix.MSG_CTRUNC != 0:
			drop(pid, ErrTruncated)
		default:
			m, err := Parse(buf[:n])
			if err != nil {
				drop(pid, err)
				continue
			}
			m.PID = pid
			handle(m)
		}
	}
}

// closeRightsAndGetPID returns the sender pid from SCM_CREDENTIALS (0 if
// absent) and closes any descriptors passed with SCM_RIGHTS (Go reads them
// close-on-exec). It allocates only for SCM_RIGHTS.
func closeRightsAndGetPID(oob []byte) int {
	pid := 0
	for len(oob) > 0 {
		hdr, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return pid
		}
		oob = rest
		switch {
		case hdr.Level != unix.SOL_SOCKET:
		case hdr.Type == unix.SCM_CREDENTIALS && len(data) >= unix.SizeofUcred:
			pid = int(int32(binary.NativeEndian.Uint32(data)))
		case hdr.Type == unix.SCM_RIGHTS:
			for ; len(data) >= 4; data = data[4:] {
				unix.Close(int(int32(binary.NativeEndian.Uint32(data))))
			}
		}
	}
	return pid
}
