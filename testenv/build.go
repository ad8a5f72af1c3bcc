package testenv

import (
	"fmt"
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
	buildDone = map[string]string{}

	scratchMu  sync.Mutex
	scratchDir string
	running    bool // the package's TestMain went through Run
)

// Run runs a package's tests and then removes the directory that Build and
// Scratch filled for them, which every test of the process shares. A package
// that uses either calls it from its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }
func Run(m *testing.M) int {
	scratchMu.Lock()
	running = true
	scratchMu.Unlock()
	code := m.Run()
	scratchMu.Lock()
	defer scratchMu.Unlock()
	if scratchDir != "" {
		if err := os.RemoveAll(scratchDir); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		}
	}
	return code
}

// Scratch returns a directory for what the tests of this process build once
// and share (binaries, packages), readable by all users: tests run workers
// and clients as other users. Run removes it; without Run the test fails,
// since nothing else would.
func Scratch(t testing.TB) string {
	t.Helper()
	scratchMu.Lock()
	defer scratchMu.Unlock()
	if !running {
		t.Fatal("testenv: the package's TestMain must call testenv.Run, which removes what the tests built")
	}
	if scratchDir == "" {
		dir, err := os.MkdirTemp("", "sockshim-test-")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		scratchDir = dir
	}
	return scratchDir
}

const (
	sockshimCmd = "github.com/sockshim/sockshim/cmd/sockshim"
	handoffCmd  = "github.com/sockshim/sockshim/cmd/sockshim-handoff"
)

// Build compiles the main package at importPath once per test process into
// Scratch and returns the binary's path. When the tests run with -race, so
// is the binary, which puts sockshim's own concurrency under the race
// detector in every end-to-end test. Otherwise it is built without cgo,
// statically, as scripts/package.sh builds what ships: a cgo build links
// libc dynamically and costs `sockshim reload` 1.7 ms more CPU time per run
// (5.0 against 3.3 ms, perf stat, 2026-11-26), which benchmarks would
// charge to every reload.
func Build(t testing.TB, importPath string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := buildDone[importPath]; ok {
		return bin
	}
	buildDir := Scratch(t)
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
	cmd := exec.Command("go", append(args, pkgs...)...)
	if !RaceEnabled {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // the race detector needs cgo
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	bin := filepath.Join(buildDir, path.Base(importPath))
	buildDone[importPath] = bin
	return bin
}
