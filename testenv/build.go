package testenv

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildMu   sync.Mutex
	buildDir  string
	buildDone = map[string]string{}
)

// Build compiles the main package at importPath once per test process and
// returns the binary's path. When the tests run with -race, so is the
// binary, which puts sockshim's own concurrency under the race detector in
// every end-to-end test.
func Build(t testing.TB, importPath string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := buildDone[importPath]; ok {
		return bin
	}
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "sockshim-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		// Readable by all: tests run workers, and clients, as other users.
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		buildDir = dir
	}
	bin := filepath.Join(buildDir, path.Base(importPath))
	args := []string{"build", "-o", bin}
	if RaceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, importPath)...).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: go build %s: %v\n%s", importPath, err, out)
	}
	buildDone[importPath] = bin
	return bin
}
