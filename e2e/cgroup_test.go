package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/internal/cgroup"
	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/testenv"
)

// serviceCgroup is the cgroup v2 directory of pid, from its "0::" line.
func serviceCgroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rel, ok := strings.CutPrefix(line, "0::"); ok && rel != "/" {
			for _, mount := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
				if _, err := os.Stat(filepath.Join(mount, rel, "cgroup.kill")); err == nil {
					return filepath.Join(mount, rel)
				}
			}
		}
	}
	t.Fatalf("no cgroup v2 directory for pid %d:\n%s", pid, b)
	return ""
}

// workerCgroups returns the processes in each worker cgroup (w*) below dir.
func workerCgroups(t *testing.T, dir string) map[string][]int {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(dir, "w*"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]int{}
	for _, d := range dirs {
		pids, err := cgroup.Procs(d)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(d)] = pids
	}
	return out
}

// TestCgroupContainment: under a real systemd with Delegate=yes, sockshim
// moves into a "supervisor" leaf and starts each worker in a cgroup of its
// own. Each worker forks a setsid daemon that serves the listening socket;
// a reload kills the old generation's daemons with cgroup.kill and removes
// their cgroups, and so does stop. `sockshim status -json` shows each
// worker's CPU time.
func TestCgroupContainment(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	const count = 2
	gen := func(version string) string {
		return workerConfig(b, version, "rolling", 1, count, "-daemonize", "stay",
			"-daemon-pidfile", filepath.Join(t.TempDir(), "daemon.pid"))
	}
	a := installApp(t, m, b, "cg", gen("v1"))
	m.WriteUnit(t, "cg.service.d/delegate.conf", "[Service]\nDelegate=yes\n")
	a.activate(t)
	mainPID := m.MainPID(t, "cg.service")
	if !strings.Contains(m.Log(), "containment: a cgroup per worker") {
		t.Fatalf("sockshim did not use cgroups under Delegate=yes:\n%s", m.Log())
	}
	leaf := serviceCgroup(t, mainPID)
	if filepath.Base(leaf) != "supervisor" {
		t.Fatalf("sockshim runs in %s, want a leaf named supervisor", leaf)
	}
	dir := filepath.Dir(leaf)
	if pids, err := cgroup.Procs(dir); err != nil || len(pids) != 0 {
		t.Fatalf("the service's cgroup holds processes %v (%v), want none", pids, err)
	}

	// Each worker cgroup: the worker and its daemon, exactly.
	first := waitWorkerCgroups(t, dir, count)
	var gen1 []int
	for name, pids := range first {
		gen1 = append(gen1, pids...)
		t.Logf("generation 1: %s holds %v", name, pids)
	}

	// status -json: every worker has its CPU time.
	out, err := exec.Command(b.sockshim, "status", "-c", a.cfgPath, "-json").Output()
	if err != nil {
		t.Fatalf("sockshim status -json: %v", err)
	}
	var st control.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	withCPU := 0
	for _, w := range st.Groups[0].Workers {
		if w.CPU != nil && *w.CPU > 0 {
			withCPU++
		}
	}
	if len(st.Groups[0].Workers) != count || withCPU != count {
		t.Errorf("status shows %d workers, %d with CPU time; want %d and %d:\n%s", len(st.Groups[0].Workers), withCPU, count, count, out)
	}
	if table, err := exec.Command(b.sockshim, "status", "-c", a.cfgPath).Output(); err != nil || !strings.Contains(string(table), "CPU") {
		t.Errorf("status table (%v) lacks a CPU column:\n%s", err, table)
	}

	// A reload: generation 1's workers drain (within drain_timeout, 10 s),
	// their daemons go with them.
	a.rewrite(t, gen("v2"))
	m.MustSystemctl(t, "reload", "cg.service")
	left := survivors(gen1, 15*time.Second)
	t.Logf("after the reload: %d of generation 1's %d processes alive", len(left), len(gen1))
	if len(left) != 0 {
		t.Errorf("%d of generation 1's %d processes (workers and setsid daemons) survived the reload: %v", len(left), len(gen1), left)
	}
	second := waitWorkerCgroups(t, dir, count)
	var gen2 []int
	for name, pids := range second {
		if _, old := first[name]; old {
			t.Errorf("generation 1's cgroup %s still there after the reload", name)
		}
		gen2 = append(gen2, pids...)
	}
	for range 20 {
		if v := get(t, a.url).version; v != "v2" && v != "v2-daemon" {
			t.Fatalf("answer from version %q after the reload, want v2", v)
		}
	}

	// Stop: sockshim drains, and the daemons go with their workers.
	m.MustSystemctl(t, "stop", "cg.service", "cg.socket")
	left = survivors(append(gen2, mainPID), 10*time.Second)
	t.Logf("after stop: %d of %d processes alive", len(left), len(gen2)+1)
	if len(left) != 0 {
		t.Errorf("%d of generation 2's %d processes and sockshim survived stop: %v", len(left), len(gen2), left)
	}
	if res := m.Show(t, "cg.service", "Result"); res != "success" {
		t.Errorf("after stop: Result=%s, want success", res)
	}
	if !strings.Contains(m.Log(), "killed processes the worker left behind in its cgroup") {
		t.Errorf("sockshim did not report the daemons it killed:\n%s", m.Log())
	}
}

// waitWorkerCgroups waits until dir has exactly n worker cgroups of two
// processes each (a worker and its daemon) and returns them.
func waitWorkerCgroups(t *testing.T, dir string, n int) map[string][]int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cgs := workerCgroups(t, dir)
		ok := len(cgs) == n
		for _, pids := range cgs {
			ok = ok && len(pids) == 2
		}
		if ok {
			return cgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker cgroups %v, want %d of 2 processes each", cgs, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
