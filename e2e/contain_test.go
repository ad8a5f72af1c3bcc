package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/internal/procfs"
	"github.com/sockshim/sockshim/testenv"
)

// survivors waits a bounded time for pids to go and returns those alive.
func survivors(pids []int, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		var alive []int
		for _, p := range pids {
			if testenv.Alive(p) {
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill9Loop starts sockshim on one config and port, SIGKILLs it once it
// serves, `rounds` times, then starts it once more and stops it. It returns
// how many descendants of a killed sockshim outlived it (a second later),
// and how many were still alive once the next sockshim served.
func kill9Loop(t *testing.T, b bins, workers string, rounds, perLife int) (outlived, survived int) {
	a := newApp(t, b, "kill9")
	a.listen = fmt.Sprintf("[[listen]]\nname = \"http\"\naddress = \"tcp://127.0.0.1:%d\"\n", a.port)
	a.rewrite(t, workers)
	var prev []int
	for i := range rounds + 1 {
		up := newUpstream(t)
		sup := startSupervisor(t, b, a.cfgPath, "NOTIFY_SOCKET="+up.path)
		up.await(t, "READY=1", a.upWithin(t))
		if alive := survivors(prev, 0); len(alive) > 0 {
			survived += len(alive)
			t.Errorf("life %d serves while %d processes of life %d live: %v", i, len(alive), i-1, alive)
		}
		get(t, a.url)
		if i == rounds {
			sup.signal(t, syscall.SIGTERM)
			if err := sup.wait(t, 10*time.Second); err != nil {
				t.Errorf("last sockshim exit: %v, want 0", err)
			}
			return outlived, survived
		}
		prev = testenv.Descendants(sup.cmd.Process.Pid)
		if len(prev) != perLife {
			t.Fatalf("life %d: %d descendants, want %d: %v", i, len(prev), perLife, prev)
		}
		sup.signal(t, syscall.SIGKILL)
		sup.wait(t, 5*time.Second)
		outlived += len(survivors(prev, time.Second))
	}
	panic("unreachable")
}

// TestKill9LeavesNoWorker: 20 times, a standalone sockshim with 8 workers is
// SIGKILLed; no worker outlives it (the trampoline execs from the thread
// that carries the parent-death signal) and every restart binds the port.
func TestKill9LeavesNoWorker(t *testing.T) {
	b := build(t)
	outlived, survived := kill9Loop(t, b, workerConfig(b, "v1", "rolling", 1, 8), 20, 8)
	t.Logf("160 workers: %d outlived sockshim, %d were alive when the next sockshim served", outlived, survived)
	if outlived != 0 {
		t.Errorf("%d of 160 workers outlived a SIGKILLed sockshim, want 0", outlived)
	}
}

// TestKill9ShellWrappedWorker: the server is a child of a shell (and sets
// LISTEN_PID to its own pid on the way), so it has no parent-death signal of
// its own and outlives a SIGKILLed sockshim;
// the next sockshim of the same instance kills it before binding, so the
// restart binds and nothing of the old life serves.
func TestKill9ShellWrappedWorker(t *testing.T) {
	b := build(t)
	workers := fmt.Sprintf(`
[[worker]]
name = "wrapped"
command = ["/bin/sh", "-c", "/bin/sh -c 'LISTEN_PID=$$ exec %s -version v1' & wait"]
count = 8
ready_timeout = "5s"
`, b.testworker)
	outlived, survived := kill9Loop(t, b, workers, 5, 16)
	t.Logf("40 wrapped servers: %d outlived sockshim until the next one started, %d were alive when it served", outlived, survived)
	if survived != 0 {
		t.Errorf("%d processes of an earlier life were alive once the next sockshim served, want 0", survived)
	}
}

// TestOrphansReapedAsPID1: sockshim as a PID namespace's init, with a worker
// whose helper double-forks short-lived children: each is re-parented to
// sockshim and reaped, none stays a zombie; and workers and ready_command
// probes keep their own exit statuses (a probe whose status was stolen would
// never pass, and the worker would never be ready).
func TestOrphansReapedAsPID1(t *testing.T) {
	b := build(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare not found: apt-get install util-linux")
	}
	a := newApp(t, b, "pid1")
	a.listen = fmt.Sprintf("[[listen]]\nname = \"http\"\naddress = \"tcp://127.0.0.1:%d\"\n", a.port)
	marks := filepath.Join(a.fdDir, "marks")
	const orphans = 40
	a.rewrite(t, fmt.Sprintf(`
[[worker]]
name = "forky"
command = ["/bin/sh", "-c", "for i in $(seq %d); do ( (sleep 0.05; echo x >> %s) & ); done; exec %s -version v1"]
count = 2
ready = "command"
ready_command = ["/bin/sh", "-c", "exit 0"]
ready_timeout = "5s"
`, orphans, marks, b.testworker))
	up := newUpstream(t)
	cmd := exec.Command("unshare", "-p", "-f", "--mount-proc", b.sockshim, "run", "-c", a.cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+up.path)
	sup := superviseCmd(t, cmd)
	up.await(t, "READY=1", a.upWithin(t))
	kids, err := procfs.Children(cmd.Process.Pid)
	if err != nil || len(kids) != 1 {
		t.Fatalf("unshare's children: %v, %v; want sockshim alone", kids, err)
	}
	pid1 := kids[0]
	waitFor(t, 10*time.Second, fmt.Sprintf("%d orphans to finish", 2*orphans), func() bool {
		b, _ := os.ReadFile(marks)
		return strings.Count(string(b), "x") == 2*orphans
	})
	// They exit right after writing: a zombie left now is one never reaped.
	var zombies []int
	deadline := time.Now().Add(5 * time.Second)
	for {
		zombies = testenv.Zombies(pid1)
		if len(zombies) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d orphans exited; %d zombies under sockshim (pid 1 of its namespace)", 2*orphans, len(zombies))
	if len(zombies) != 0 {
		t.Errorf("%d zombies under sockshim, want 0: %v", len(zombies), zombies)
	}
	get(t, a.url)
	// unshare forwards no signal: to sockshim itself, which handles SIGTERM
	// as its namespace's init.
	if err := syscall.Kill(pid1, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := sup.wait(t, 10*time.Second); err != nil {
		t.Errorf("sockshim exit: %v, want 0", err)
	}
	if out := sup.output(); strings.Contains(out, "no child processes") {
		t.Errorf("an exit status was stolen:\n%s", out)
	}
}

// TestSetsidHelperDiesWithWorker: a worker's helper that left the worker's
// process group and session (setsid) and holds a copy of the listening
// socket dies when its worker is drained by a reload, and when sockshim
// stops; after the stop the port binds again.
func TestSetsidHelperDiesWithWorker(t *testing.T) {
	b := build(t)
	workers := func(v string) string {
		return fmt.Sprintf(`
[[worker]]
name = "daemonizing"
command = ["/bin/sh", "-c", "setsid sleep 1000 & exec %s -version %s"]
count = 2
ready_timeout = "5s"
drain_timeout = "5s"
`, b.testworker, v)
	}
	a := startServing(t, b, workers("v1"))
	// The live ones: a helper killed with its drained worker stays a
	// zombie until sockshim, its subreaper, reaps it a moment later.
	helpers := func() []int {
		var out []int
		for _, p := range testenv.Descendants(a.sup.cmd.Process.Pid) {
			if procfs.Comm(p) == "sleep" && testenv.Alive(p) {
				out = append(out, p)
			}
		}
		return out
	}
	var v1 []int
	waitFor(t, 5*time.Second, "2 helpers", func() bool { v1 = helpers(); return len(v1) == 2 })
	for _, p := range v1 {
		if st, err := procfs.ReadStat(p); err != nil || st.PGID != p {
			t.Fatalf("helper %d: pgid %d (%v), want a group of its own", p, st.PGID, err)
		}
	}
	a.mustDeploy(t, workers("v2"))
	if alive := survivors(v1, 5*time.Second); len(alive) != 0 {
		t.Errorf("%d helpers of drained workers alive after the reload: %v", len(alive), alive)
	}
	v2 := helpers()
	if len(v2) != 2 {
		t.Fatalf("%d helpers of generation 2, want 2: %v", len(v2), v2)
	}
	a.sup.signal(t, syscall.SIGTERM)
	if err := a.sup.wait(t, 10*time.Second); err != nil {
		t.Errorf("sockshim exit: %v, want 0", err)
	}
	if alive := survivors(v2, 0); len(alive) != 0 {
		t.Errorf("%d helpers alive after sockshim stopped: %v", len(alive), alive)
		for _, p := range alive {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", a.port))
	if err != nil {
		t.Errorf("port after sockshim stopped: %v", err)
	} else {
		ln.Close()
	}
}
