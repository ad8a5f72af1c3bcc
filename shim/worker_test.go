package shim

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// threads is the number of this process's threads.
func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads: line in /proc/self/status")
	return 0
}

// TestWaitExitHoldsNoThread waits for many children at once: each waiter
// parks on the poller instead of holding a thread in waitid(2), and each
// still gets its own child's exit status.
func TestWaitExitHoldsNoThread(t *testing.T) {
	const n = 32
	before := threads(t)
	release, err := os.CreateTemp(t.TempDir(), "go")
	if err != nil {
		t.Fatal(err)
	}
	release.Close()
	var wg sync.WaitGroup
	errs := make([]error, n)
	cmds := make([]*exec.Cmd, n)
	for i := range n {
		// Each child waits for the file to vanish, then exits with its index.
		cmds[i] = exec.Command("/bin/sh", "-c", fmt.Sprintf("while [ -e %s ]; do sleep 0.01; done; exit %d", release.Name(), i))
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { errs[i] = waitExit(cmds[i], slog.Default()) })
	}
	// Had each waiter a thread, their count would reach n while the
	// children live; sample it for a while.
	most := 0
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		most = max(most, threads(t))
	}
	os.Remove(release.Name())
	wg.Wait()
	if grew := most - before; grew > 4 {
		t.Errorf("waiting for %d children took %d more threads, want at most 4", n, grew)
	}
	for i, err := range errs {
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		if code != i {
			t.Errorf("child %d: exit code %d", i, code)
		}
	}
}

// TestWaitExitSignalled reports a child killed by a signal as cmd.Wait does.
func TestWaitExitSignalled(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(20*time.Millisecond, func() { cmd.Process.Signal(syscall.SIGKILL) })
	err := waitExit(cmd, slog.Default())
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("waitExit = %v, want killed by SIGKILL", err)
	}
}
