package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/handoff"
)

// installCopy puts sockshim, and sockshim-handoff unless withHandoff is
// false, into dir, as a package or tarball would, and returns bins that run
// that copy.
func installCopy(t *testing.T, b bins, dir string, withHandoff bool) bins {
	t.Helper()
	names := []string{"sockshim"}
	if withHandoff {
		names = append(names, handoff.BinaryName)
	}
	for _, n := range names {
		dst := filepath.Join(dir, n)
		copyFile(t, filepath.Join(filepath.Dir(b.sockshim), n), dst)
		if err := os.Chmod(dst, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bins{sockshim: filepath.Join(dir, "sockshim"), testworker: b.testworker}
}

// TestTrampolineImageIsPinned: sockshim starts workers through the
// sockshim-handoff it found beside itself at start-up and keeps using that
// image when the file on disk is replaced (a package upgrade) or removed, so
// a running supervisor never mixes trampoline versions.
func TestTrampolineImageIsPinned(t *testing.T) {
	b := build(t)
	dir := t.TempDir()
	cb := installCopy(t, b, dir, true)
	a := startServing(t, cb, workerConfig(cb, "v1", "rolling", 1, 2))
	want := "workers start through " + handoff.BinaryName
	a.sup.awaitLog(t, want)
	if !strings.Contains(a.sup.output(), filepath.Join(dir, handoff.BinaryName)) {
		t.Errorf("the log does not name %s:\n%s", filepath.Join(dir, handoff.BinaryName), a.sup.output())
	}

	// Replace the file the way dpkg does (a new file renamed over it) with
	// one that can only fail, then remove it altogether.
	path := filepath.Join(dir, handoff.BinaryName)
	if err := os.WriteFile(path+".dpkg-new", []byte("#!/bin/sh\nexit 99\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".dpkg-new", path); err != nil {
		t.Fatal(err)
	}
	a.mustDeploy(t, workerConfig(cb, "v2", "rolling", 1, 2))
	checkGeneration(t, a, 2, 2)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	a.mustDeploy(t, workerConfig(cb, "v3", "rolling", 1, 2))
	checkGeneration(t, a, 3, 2)
	if got := get(t, a.url).version; got != "v3" {
		t.Errorf("after the reload the answer is from %q, want v3", got)
	}
}

// TestTrampolineFallsBackToOwnBinary: without sockshim-handoff beside it
// (go run, go install), sockshim starts workers through its own binary and
// says so once.
func TestTrampolineFallsBackToOwnBinary(t *testing.T) {
	b := build(t)
	cb := installCopy(t, b, t.TempDir(), false)
	a := startServing(t, cb, workerConfig(cb, "v1", "rolling", 1, 2))
	a.sup.awaitLog(t, "workers start through sockshim's own binary")
	a.mustDeploy(t, workerConfig(cb, "v2", "rolling", 1, 2))
	checkGeneration(t, a, 2, 2)
}

// TestTrampolineFromAnotherUser: in a sticky world-writable directory (where
// someone ran sockshim from /tmp, say), another user can plant a
// sockshim-handoff beside it. It would run as every worker's user, so
// sockshim refuses to start, naming the file and its owner, rather than run
// it or silently fall back.
func TestTrampolineFromAnotherUser(t *testing.T) {
	b := build(t)
	dir, err := os.MkdirTemp("", "sockshim-sticky-") // t.TempDir's parent is closed to nobody
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	cb := installCopy(t, b, dir, false)
	planted := filepath.Join(dir, handoff.BinaryName)
	if out, err := exec.Command("runuser", "-u", "nobody", "--", "cp", "/bin/true", planted).CombinedOutput(); err != nil {
		t.Fatalf("runuser -u nobody cp: %v\n%s", err, out)
	}
	a := startStandalone(t, cb, workerConfig(cb, "v1", "rolling", 1, 1))
	err = a.sup.wait(t, 10*time.Second)
	out := a.sup.output()
	if err == nil || !strings.Contains(out, planted+" is owned by uid 65534") {
		t.Fatalf("sockshim with a planted %s: exit %v, want a failure naming the file and its owner:\n%s", handoff.BinaryName, err, out)
	}
}
