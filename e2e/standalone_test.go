package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
)

// TestStandalone runs sockshim without systemd: it binds the [[listen]]
// socket itself, starts a generation of testworkers, reports READY=1 to a
// notify socket the test owns, serves, and drains on SIGTERM leaving nothing
// behind.
func TestStandalone(t *testing.T) {
	b := build(t)
	a := startStandalone(t, b, workerConfig(b, "v1", "rolling", 1, 3, "-report", "FDDIR"))
	ctl, port, sup, fdDir := a.ctl, a.port, a.sup, a.fdDir
	msgs := a.up.collect(t, "READY=1", 15*time.Second)
	if ready := msgs[len(msgs)-1]; !strings.Contains(ready, "STATUS=gen 1: tw 3/3 ready") {
		t.Errorf("READY datagram %q lacks the status line", ready)
	}
	// Each worker that became ready asked systemd for more start time.
	if !strings.Contains(strings.Join(msgs, "\n"), "EXTEND_TIMEOUT_USEC=") {
		t.Errorf("no EXTEND_TIMEOUT_USEC while the workers started: %q", msgs)
	}

	st := status(t, ctl)
	pids := workerPIDs(st, "ready")
	if len(pids) != 3 {
		t.Fatalf("want 3 ready workers, status says %+v", st)
	}
	var ids []int
	for _, w := range st.Groups[0].Workers {
		ids = append(ids, w.ID)
		if w.Generation != 1 {
			t.Errorf("worker %d: generation %d, want 1", w.ID, w.Generation)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []int{0, 1, 2}) {
		t.Errorf("worker ids %v, want [0 1 2]", ids)
	}

	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for range 20 {
		a := get(t, url)
		pid, _ := strconv.Atoi(a.pid)
		if a.version != "v1" || a.generation != "1" || !slices.Contains(pids, pid) {
			t.Fatalf("answer %+v not from a generation-1 worker %v", a, pids)
		}
	}

	// What each worker inherited: 0-2 and exactly the one passed socket.
	for _, pid := range pids {
		checkInheritedFDs(t, fdDir, pid, 1)
	}
	if z := testenv.Zombies(sup.cmd.Process.Pid); len(z) > 0 {
		t.Errorf("zombie children of sockshim: %v", z)
	}

	sup.signal(t, syscall.SIGTERM)
	a.up.await(t, "STOPPING=1", 5*time.Second)
	if err := sup.wait(t, 10*time.Second); err != nil {
		t.Errorf("sockshim exit: %v, want 0", err)
	}
	testenv.WaitGone(t, pids, 5*time.Second)
	if _, err := os.Stat(ctl); err == nil {
		t.Errorf("control socket %s left behind", ctl)
	}
}

// TestWorkersDieWithSockshim: a SIGKILLed supervisor takes its workers along
// (PR_SET_PDEATHSIG), so no orphan keeps serving stale code.
func TestWorkersDieWithSockshim(t *testing.T) {
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 2))
	sup, ctl := a.sup, a.ctl
	pids := workerPIDs(status(t, ctl), "ready")
	if len(pids) != 2 {
		t.Fatalf("want 2 workers, got %v", pids)
	}
	sup.signal(t, syscall.SIGKILL)
	sup.wait(t, 5*time.Second)
	testenv.WaitGone(t, pids, 5*time.Second)
}

// TestCrashLoopBacksOff: a worker that exits at once is restarted with
// growing delays (never a busy loop) and the loop shows in STATUS.
func TestCrashLoopBacksOff(t *testing.T) {
	b := build(t)
	a := startStandalone(t, b, `
[[worker]]
name = "crashy"
command = ["/bin/sh", "-c", "echo starting >&2; echo oops >&2; exit 3"]
`)
	sup := a.sup
	a.up.await(t, "crash loop", 10*time.Second)
	time.Sleep(3 * time.Second)
	sup.signal(t, syscall.SIGTERM)
	if err := sup.wait(t, 10*time.Second); err != nil {
		t.Errorf("sockshim exit: %v", err)
	}
	// Backoff 100ms, 200ms, 400ms, … : at most ~6 starts in ~4s, where a
	// busy loop would start hundreds.
	out := sup.output()
	starts := strings.Count(out, `msg="worker started"`)
	if starts < 3 || starts > 8 {
		t.Errorf("%d worker starts in ~4s; want 3..8 with exponential backoff", starts)
	}
	if !strings.Contains(out, "oops") {
		t.Errorf("worker stderr not in sockshim's output")
	}
	if !strings.Contains(out, "exit status 3") {
		t.Errorf("exit status not logged")
	}
}

// checkInheritedFDs reads the fd report the testworker wrote at startup and
// asserts it held exactly fds 0-2 and n sockets at 3…3+n-1.
func checkInheritedFDs(t *testing.T, dir string, pid, n int) {
	t.Helper()
	fds, err := testenv.ReadFDReport(dir, pid)
	if err != nil {
		t.Fatalf("worker %d: %v", pid, err)
	}
	for fd, target := range fds {
		switch {
		case fd <= 2:
		case fd < 3+n && strings.HasPrefix(target, "socket:"):
		default:
			t.Errorf("worker %d inherited fd %d -> %s", pid, fd, target)
		}
	}
	for fd := 3; fd < 3+n; fd++ {
		if _, ok := fds[fd]; !ok {
			t.Errorf("worker %d lacks passed socket fd %d (has %v)", pid, fd, fds)
		}
	}
}
