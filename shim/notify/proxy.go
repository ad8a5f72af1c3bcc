package notify

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Proxy is a notify socket for one worker. The worker finds its address in
// NOTIFY_SOCKET; sockshim reads what it sends and decides what to forward.
//
// The socket lives in the abstract namespace so it needs no directory, leaves
// nothing behind and works for workers that dropped privileges. Abstract
// sockets have no permission bits, so every datagram carries the sender's
// credentials (SO_PASSCRED) and the caller decides whom to believe.
type Proxy struct {
	conn *net.UnixConn
	addr string
}

// Listen opens a proxy socket whose abstract name contains tag (for humans
// reading ss(8) output) and a random suffix (so names never collide or get
// guessed across sockshim restarts).
func Listen(tag string) (*Proxy, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("notify proxy: random name: %w", err)
	}
	addr := fmt.Sprintf("@sockshim/%d/%s/%s", os.Getpid(), tag, hex.EncodeToString(rnd[:]))
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify proxy %s: %w", addr, err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify proxy %s: %w", addr, err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		conn.Close()
		return nil, fmt.Errorf("notify proxy %s: SO_PASSCRED: %w", addr, errors.Join(err, serr))
	}
	return &Proxy{conn: conn, addr: addr}, nil
}

// Addr is the value for the worker's NOTIFY_SOCKET.
func (p *Proxy) Addr() string { return p.addr }

// Close stops Serve and releases the socket.
func (p *Proxy) Close() error { return p.conn.Close() }

// Serve reads datagrams until the proxy is closed, calling handle for each
// well-formed one and bad for each malformed one. File descriptors a worker
// attaches (FDSTORE=1) are closed at once: sockshim stores none for workers.
func (p *Proxy) Serve(handle func(Message), bad func(pid int, err error)) {
	buf := make([]byte, MaxDatagram+1)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*253))
	for {
		n, oobn, flags, _, err := p.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			bad(0, fmt.Errorf("read: %w", err))
			continue
		}
		pid := closeRightsAndGetPID(oob[:oobn])
		switch {
		case flags&unix.MSG_TRUNC != 0 || n > MaxDatagram:
			bad(pid, fmt.Errorf("datagram larger than %d bytes dropped", MaxDatagram))
			continue
		case flags&unix.MSG_CTRUNC != 0:
			bad(pid, errors.New("datagram with truncated ancillary data dropped"))
			continue
		}
		m, err := Parse(buf[:n])
		if err != nil {
			bad(pid, err)
			continue
		}
		m.PID = pid
		handle(m)
	}
}

// closeRightsAndGetPID returns the sender pid from SCM_CREDENTIALS and closes
// any descriptors passed with SCM_RIGHTS (Go reads them close-on-exec).
func closeRightsAndGetPID(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	pid := 0
	for _, m := range msgs {
		if cred, err := unix.ParseUnixCredentials(&m); err == nil {
			pid = int(cred.Pid)
		}
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
	return pid
}
