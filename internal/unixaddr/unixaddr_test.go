package unixaddr

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A path of MaxPath bytes binds; one byte more does not.
func TestMaxPath(t *testing.T) {
	dir := t.TempDir()
	path := func(n int) string {
		p := filepath.Join(dir, "s")
		return p + strings.Repeat("x", n-len(p))
	}
	bind := func(p string) error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		return unix.Bind(fd, &unix.SockaddrUnix{Name: p})
	}
	if len(dir) > MaxPath-2 {
		t.Fatalf("temporary directory %s leaves no room for a %d-byte socket path (set TMPDIR shorter)", dir, MaxPath)
	}
	if err := bind(path(MaxPath)); err != nil {
		t.Errorf("bind a %d-byte path: %v", MaxPath, err)
	}
	if err := bind(path(MaxPath + 1)); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("bind a %d-byte path: %v, want EINVAL", MaxPath+1, err)
	}
}
