package cgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testTree makes a throwaway cgroup below the v2 hierarchy's root, removed
// (with anything left in it) when the test ends. It needs root and cgroup
// v2 with cgroup.kill; without them the test fails.
func testTree(t *testing.T) *Tree {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("creating a test cgroup needs root (uid %d)", os.Geteuid())
	}
	mount, err := v2Mount()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mount, "sockshim-test-"+strconv.Itoa(os.Getpid())+"-"+t.Name())
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() {
				g := &Group{Dir: filepath.Join(dir, e.Name())}
				if _, err := g.Remove(2 * time.Second); err != nil {
					t.Error(err)
				}
			}
		}
		if _, err := (&Group{Dir: dir}).Remove(2 * time.Second); err != nil {
			t.Error(err)
		}
	})
	return Open(dir)
}

// startIn starts argv directly in g (CLONE_INTO_CGROUP) and reaps it in the
// background.
func startIn(t *testing.T, g *Group, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: g.FD()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	return cmd
}

// waitProcs waits until dir holds exactly n processes and returns them.
func waitProcs(t *testing.T, dir string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := Procs(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) == n {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d processes %v, want %d", dir, len(pids), pids, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A worker that leaves a setsid daemon behind: both start in the worker's
// cgroup, cpu.stat counts their CPU, cgroup.kill takes both, and the cgroup
// is removed once empty.
func TestGroupKillsSetsidDaemon(t *testing.T) {
	tr := testTree(t)
	g, err := tr.New("w1")
	if err != nil {
		t.Fatal(err)
	}
	// The shell burns some CPU, starts a daemon in a session of its own and
	// becomes the worker.
	cmd := startIn(t, g, "/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; setsid sleep 300 & exec sleep 300")
	pids := waitProcs(t, g.Dir, 2)
	if !slices.Contains(pids, cmd.Process.Pid) {
		t.Fatalf("worker %d not in its cgroup %v", cmd.Process.Pid, pids)
	}
	var daemon int
	for _, p := range pids {
		if p != cmd.Process.Pid {
			daemon = p
		}
	}
	// The shell's fork shows up before it has exec'd setsid.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		sid, _ := unix.Getsid(daemon)
		if sid == daemon {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon %d has session %d, want its own", daemon, sid)
		}
	}
	u, err := g.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.CPU <= 0 {
		t.Errorf("cpu usage %s after a 20,000-step shell loop, want > 0", u.CPU)
	}
	if _, err := os.Stat(filepath.Join(g.Dir, "memory.current")); (err == nil) != (u.Memory >= 0) {
		t.Errorf("memory %d, memory.current present: %v", u.Memory, err == nil)
	}
	if busy, err := g.Populated(); err != nil || !busy {
		t.Fatalf("populated %v, %v; want true", busy, err)
	}
	if killed, err := g.Remove(5 * time.Second); err != nil || !killed {
		t.Fatalf("Remove of a populated cgroup: killed %v, %v; want true, nil", killed, err)
	}
	for _, p := range pids {
		if err := unix.Kill(p, 0); err == nil {
			if st, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat"); !strings.Contains(string(st), ") Z ") {
				t.Errorf("process %d alive after cgroup.kill", p)
			}
		}
	}
	if _, err := os.Stat(g.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still there after Remove: %v", g.Dir, err)
	}
	// A leftover of the same name is killed and replaced.
	g2, err := tr.New("w1")
	if err != nil {
		t.Fatal(err)
	}
	startIn(t, g2, "sleep", "300")
	waitProcs(t, g2.Dir, 1)
	g3, err := tr.New("w1")
	if err != nil {
		t.Fatal(err)
	}
	defer g3.Close()
	waitProcs(t, g3.Dir, 0)
}

// delegated accepts a cgroup that its process has to itself, and refuses one
// shared with another process or marked as not delegated.
func TestDelegated(t *testing.T) {
	tr := testTree(t)
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	if err := write(tr.Dir(), "cgroup.procs", strconv.Itoa(sleeper.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	if reason := delegated(tr.Dir(), sleeper.Process.Pid); reason != "" {
		t.Errorf("a cgroup with its process alone: %s", reason)
	}
	if reason := delegated(tr.Dir(), os.Getpid()); !strings.Contains(reason, "holds 1 processes besides sockshim") {
		t.Errorf("a cgroup with another process: %q", reason)
	}
	if err := unix.Setxattr(tr.Dir(), "trusted.delegate", []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	if reason := delegated(tr.Dir(), sleeper.Process.Pid); !strings.Contains(reason, `trusted.delegate="0"`) {
		t.Errorf("trusted.delegate=0: %q", reason)
	}
	if err := unix.Setxattr(tr.Dir(), "trusted.delegate", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if reason := delegated(tr.Dir(), sleeper.Process.Pid); reason != "" {
		t.Errorf("trusted.delegate=1: %s", reason)
	}

	// Enter moves the process into the leaf; the tree's cgroup is left empty.
	if err := tr.Enter("supervisor"); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, tr.Dir(), 0)
	if pids := waitProcs(t, filepath.Join(tr.Dir(), "supervisor"), 1); pids[0] != sleeper.Process.Pid {
		t.Errorf("supervisor leaf holds %v, want %d", pids, sleeper.Process.Pid)
	}
}
