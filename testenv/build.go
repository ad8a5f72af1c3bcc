package testenv

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	buildMu   sync.Mutex
	buildDir  string
	buildDone = map[string]string{}
)

const (
	sockshimCmd = "github.com/sockshim/sockshim/cmd/sockshim"
	handoffCmd  = "github.com/sockshim/sockshim/cmd/sockshim-handoff"
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
	// sockshim starts its workers through the trampoline binary it finds
	// beside itself, as the packages install them.
	pkgs := []string{importPath}
	if importPath == sockshimCmd {
		pkgs = append(pkgs, handoffCmd)
	}
	args := []string{"build", "-o", buildDir + "/"}
	if RaceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	bin := filepath.Join(buildDir, path.Base(importPath))
	buildDone[importPath] = bin
	return bin
}
