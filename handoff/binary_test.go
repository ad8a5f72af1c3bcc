package handoff

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenBinary finds the trampoline where builds and packages put it and
// refuses one that someone else could have written.
func TestOpenBinary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (chown to another user); run the suite as root")
	}
	put := func(t *testing.T, path string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name    string
		setup   func(t *testing.T, root string)
		want    string // the path found, relative to root; "" for sockshim's own
		wantErr string
	}{
		{"beside", func(t *testing.T, root string) { put(t, root+"/bin/"+BinaryName, 0o755) }, "bin/" + BinaryName, ""},
		{"libexec", func(t *testing.T, root string) { put(t, root+"/libexec/sockshim/"+BinaryName, 0o755) }, "libexec/sockshim/" + BinaryName, ""},
		{"beside wins", func(t *testing.T, root string) {
			put(t, root+"/bin/"+BinaryName, 0o755)
			put(t, root+"/libexec/sockshim/"+BinaryName, 0o755)
		}, "bin/" + BinaryName, ""},
		{"none", func(t *testing.T, root string) {}, "", ""},
		{"sticky dir", func(t *testing.T, root string) {
			put(t, root+"/bin/"+BinaryName, 0o755)
			os.Chmod(root+"/bin", 0o777|os.ModeSticky)
		}, "bin/" + BinaryName, ""},
		{"group-writable file", func(t *testing.T, root string) { put(t, root+"/bin/"+BinaryName, 0o775) }, "", "writable by group or others (mode 0775)"},
		{"world-writable dir", func(t *testing.T, root string) {
			put(t, root+"/libexec/sockshim/"+BinaryName, 0o755)
			os.Chmod(root+"/libexec/sockshim", 0o777)
		}, "", "libexec/sockshim is writable by group or others (mode 0777)"},
		{"another owner", func(t *testing.T, root string) {
			put(t, root+"/bin/"+BinaryName, 0o755)
			os.Chown(root+"/bin/"+BinaryName, 65534, 65534)
		}, "", "is owned by uid 65534"},
		{"a directory", func(t *testing.T, root string) { os.MkdirAll(root+"/bin/"+BinaryName, 0o755) }, "", "is not a regular file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.Chmod(root, 0o755); err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(root+"/bin", 0o755)
			c.setup(t, root)
			b, err := OpenBinary(root + "/bin/sockshim")
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer b.File.Close()
			if c.want == "" {
				if !b.Own || b.Path != root+"/bin/sockshim" {
					t.Errorf("got %+v, want sockshim's own image", b)
				}
				return
			}
			if b.Own || b.Path != filepath.Join(root, c.want) {
				t.Errorf("got %+v, want %s", b, filepath.Join(root, c.want))
			}
		})
	}
}
