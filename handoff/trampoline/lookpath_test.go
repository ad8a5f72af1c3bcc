package trampoline

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLookPath: lookPath finds what os/exec.LookPath finds, and fails where
// it fails with the same text, for the PATH of the worker's environment.
func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"app": 0o755, "plain": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	for _, c := range []struct{ file, path string }{
		{"app", "/nonexistent:" + dir + "/"},
		{"app", dir},
		{"app", "/nonexistent"},
		{"app", ":/nonexistent"}, // "" is ".": refused, relative
		{"app", "."},
		{"plain", dir},
		{"sub", dir},
		{"sh", "/nonexistent:/bin"},
		{filepath.Join(dir, "app"), ""},
		{filepath.Join(dir, "plain"), ""},
		{filepath.Join(dir, "sub"), ""},
		{filepath.Join(dir, "missing"), ""},
		{"./app", ""},
	} {
		t.Setenv("PATH", c.path)
		want, wantErr := exec.LookPath(c.file)
		got, err := lookPath(c.file)
		if wantErr != nil {
			want = ""
		}
		if got != filepath.Clean(want) && got != want || (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Errorf("lookPath(%q) with PATH=%q = %q, %v; os/exec says %q, %v", c.file, c.path, got, err, want, wantErr)
		}
	}
	t.Setenv("PATH", "")
	os.Unsetenv("PATH")
	if _, err := lookPath("app"); err == nil || !strings.Contains(err.Error(), "not found in $PATH") {
		t.Errorf("lookPath without PATH: %v, want not found", err)
	}
}
