package fdstore

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// manager is a notify socket that reads what Store sends, as systemd does.
func manager(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// receive reads one datagram and the descriptors it carries.
func receive(t *testing.T, c *net.UnixConn) (string, []int) {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, got...)
	}
	return string(buf[:n]), fds
}

func ino(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// Add sends the socket itself with its name and FDPOLL=0; Remove sends the
// name alone; a nil Store sends nothing. Both kinds of NOTIFY_SOCKET
// address work: a path, and an abstract name.
func TestAddRemove(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, addr := range []string{filepath.Join(t.TempDir(), "notify"), "@sockshim-fdstore-test-" + t.Name()} {
		c := manager(t, addr)
		t.Setenv("NOTIFY_SOCKET", addr)
		s := FromEnv()
		if err := s.Add("http", f); err != nil {
			t.Fatal(err)
		}
		msg, fds := receive(t, c)
		if msg != "FDSTORE=1\nFDNAME=http\nFDPOLL=0" || len(fds) != 1 || ino(t, fds[0]) != ino(t, int(f.Fd())) {
			t.Errorf("%s: Add sent %q with fds %v; want the socket, named http, not polled", addr, msg, fds)
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		if err := s.Remove("http"); err != nil {
			t.Fatal(err)
		}
		if msg, fds := receive(t, c); msg != "FDSTOREREMOVE=1\nFDNAME=http" || len(fds) != 0 {
			t.Errorf("%s: Remove sent %q with fds %v", addr, msg, fds)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if s := FromEnv(); s != nil || s.Add("http", f) != nil || s.Remove("http") != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want a nil Store that does nothing", s)
	}
}

// A manager that is gone is an error that names its socket.
func TestNoManager(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "absent")
	t.Setenv("NOTIFY_SOCKET", addr)
	err := FromEnv().Remove("http")
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), addr) {
		t.Errorf("Remove with no manager: %v, want ENOENT naming %s", err, addr)
	}
}
