package sockets

import (
	"bytes"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"golang.org/x/sys/unix"
)

// stored binds the entries as an earlier start did, renamed as the store
// would pass them back.
func stored(t *testing.T, name string, entries ...string) handoff.Socket {
	t.Helper()
	socks, err := Bind(listens(t, entries...))
	if err != nil {
		t.Fatal(err)
	}
	return handoff.Socket{Name: name, File: socks[0].File}
}

func sockIno(t *testing.T, s handoff.Socket) uint64 {
	t.Helper()
	id, err := socketIno(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func socketIno(s handoff.Socket) (uint64, error) {
	var st unix.Stat_t
	err := control(s.File, func(fd int) error { return unix.Fstat(fd, &st) })
	return st.Ino, err
}

// Open takes back a passed socket that is what its entry describes, and
// listens on it again (one a process shut down accepts again); it binds
// anew an entry whose passed socket has another address, and one nothing
// was passed for; it closes a passed socket no entry names, and logs each.
func TestOpenAdopts(t *testing.T) {
	dir := t.TempDir()
	// A port of its own, as a config names it: a socket bound to port 0
	// loses its port when it is shut down.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	keptAddr := "tcp://" + free.Addr().String()
	free.Close()
	kept := stored(t, "s0", keptAddr)
	// A process that held it shut it down before sockshim died.
	if err := control(kept.File, func(fd int) error { return unix.Shutdown(fd, unix.SHUT_RD) }); err != nil {
		t.Fatal(err)
	}
	moved := stored(t, "s1", "tcp://127.0.0.1:0")
	extra := stored(t, "old", "unix:"+filepath.Join(dir, "old.sock"))
	unixKept := stored(t, "s2", "unix:"+filepath.Join(dir, "kept.sock"))
	entries := listens(t, keptAddr, "tcp://127.0.0.1:0", "unix:"+filepath.Join(dir, "kept.sock"), "tcp://[::1]:0")
	var logs bytes.Buffer
	socks, err := Open(entries, []handoff.Socket{kept, moved, extra, unixKept}, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer Close(socks)
	if len(socks) != 4 {
		t.Fatalf("Open: %d sockets, want one per entry", len(socks))
	}
	if sockIno(t, socks[0]) != sockIno(t, kept) || sockIno(t, socks[2]) != sockIno(t, unixKept) {
		t.Errorf("the passed sockets of s0 and s2 were not taken back")
	}
	// Port 0 in the config matches the port the kernel chose.
	if sockIno(t, socks[1]) != sockIno(t, moved) {
		t.Errorf("s1 (port 0 in the config) was bound anew instead of taken back")
	}
	if _, err := socketIno(extra); err == nil {
		t.Errorf("the passed socket no entry names is still open")
	}
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(keptAddr, "tcp://"), time.Second)
	if err != nil {
		t.Errorf("the socket that was shut down does not accept after Open: %v", err)
	} else {
		c.Close()
	}
	if !strings.Contains(logs.String(), "name=old") || !strings.Contains(logs.String(), "has no [[listen]] entry") {
		t.Errorf("the dropped socket is not logged:\n%s", logs.String())
	}
}

// A passed socket bound elsewhere than its entry says is closed, and the
// entry is bound anew; so is one whose unix socket file was removed.
func TestOpenRebinds(t *testing.T) {
	dir := t.TempDir()
	other := stored(t, "s0", "tcp://127.0.0.1:0")
	removed := stored(t, "s1", "unix:"+filepath.Join(dir, "removed.sock"))
	if err := unix.Unlink(filepath.Join(dir, "removed.sock")); err != nil {
		t.Fatal(err)
	}
	entries := listens(t, "tcp://[::1]:0", "unix:"+filepath.Join(dir, "removed.sock"))
	var logs bytes.Buffer
	socks, err := Open(entries, []handoff.Socket{other, removed}, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer Close(socks)
	for i, old := range []handoff.Socket{other, removed} {
		if _, err := socketIno(old); err == nil {
			t.Errorf("entry %d: the passed socket that does not match is still open", i)
		}
	}
	if sa, err := getsockname(socks[0]); err != nil || sa.(*unix.SockaddrInet6) == nil {
		t.Errorf("s0 is bound to %v (%v), want [::1]", sa, err)
	}
	if c, err := net.Dial("unix", filepath.Join(dir, "removed.sock")); err != nil {
		t.Errorf("s1 bound anew does not accept: %v", err)
	} else {
		c.Close()
	}
	for _, want := range []string{"it is bound to 127.0.0.1:", "the config says tcp://[::1]:0", "is gone or is no socket any more"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, logs.String())
		}
	}
}

func getsockname(s handoff.Socket) (unix.Sockaddr, error) {
	var sa unix.Sockaddr
	err := control(s.File, func(fd int) (err error) { sa, err = unix.Getsockname(fd); return err })
	return sa, err
}
