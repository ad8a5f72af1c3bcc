package sockfile

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	if err := RemoveStale(filepath.Join(dir, "missing.sock"), unix.SOCK_STREAM); err != nil {
		t.Errorf("missing file: %v", err)
	}

	// A socket file nobody listens on any more goes.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := RemoveStale(stale, unix.SOCK_STREAM); err != nil {
		t.Errorf("stale socket: %v", err)
	}
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Errorf("stale socket still there: %v", err)
	}

	// A live one stays, and the error says who answers.
	live := filepath.Join(dir, "live.sock")
	ln, err = net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = RemoveStale(live, unix.SOCK_STREAM)
	want := fmt.Sprintf("(pid %d, uid %d) answers; the socket file belongs to uid %d", os.Getpid(), os.Getuid(), os.Getuid())
	if err == nil || !strings.Contains(err.Error(), "in use by another process") || !strings.Contains(err.Error(), want) {
		t.Errorf("live socket: %v, want %q", err, want)
	}

	// A live datagram socket carries no credentials: its file's owner is named.
	gram := filepath.Join(dir, "gram.sock")
	pc, err := net.ListenPacket("unixgram", gram)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := RemoveStale(gram, unix.SOCK_DGRAM); err == nil || !strings.Contains(err.Error(), "belongs to uid") {
		t.Errorf("live datagram socket: %v", err)
	}

	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := RemoveStale(file, unix.SOCK_STREAM); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("regular file: %v", err)
	}
}
