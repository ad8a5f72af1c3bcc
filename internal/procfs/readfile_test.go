package procfs

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 700) // past the first buffer, several times
	if err := os.WriteFile(filepath.Join(dir, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{filepath.Join(dir, "big"), filepath.Join(dir, "empty"), "/proc/self/status"} {
		got, err := ReadFile(name)
		if err != nil {
			t.Fatalf("ReadFile(%s): %v", name, err)
		}
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		// /proc/self/status changes between two reads only in counters,
		// never in length by more than a few digits.
		if name != "/proc/self/status" && !bytes.Equal(got, want) {
			t.Fatalf("ReadFile(%s): %d bytes, os.ReadFile %d", name, len(got), len(want))
		}
		if name == "/proc/self/status" && !bytes.HasPrefix(got, []byte("Name:")) {
			t.Fatalf("ReadFile(%s) = %.40q…", name, got)
		}
	}
	_, err := ReadFile(filepath.Join(dir, "missing"))
	var pe *fs.PathError
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) || pe.Path != filepath.Join(dir, "missing") {
		t.Fatalf("ReadFile of a missing file: %v, want a *fs.PathError naming it that is fs.ErrNotExist", err)
	}
	if _, err := ReadFile(dir); err == nil {
		t.Fatal("ReadFile of a directory succeeded")
	}
}
