package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
	"golang.org/x/sys/unix"
)

// This file takes apart what a reload costs the clients, so that
// BENCHMARKS.md can tell what the machine pays for any reload from what
// sockshim adds. No sockshim serves: the harness holds a listening socket
// and 4 testworkers it started serve it. They join the CPU cgroups of a
// service of the same user manager, where sockshim's workers run too: a
// cgroup with the cpu controller is a scheduling group weighted against the
// load client's, so a reload's new processes take their CPU from the
// service's share. Rounds come at the pace of sockshim's rolling reloads,
// and each round is one of:
//
//   - `systemctl reload` of a unit whose ExecReload= is /bin/true:
//     systemctl and systemd's job alone;
//   - that, then the harness replaces the 4 serving workers one at a time
//     (start, READY=1, SIGTERM to the old one): what any supervisor that
//     replaces processes has to do, without a trampoline, cgroup or
//     supervisor;
//   - a rolling reload of a second sockshim app whose 4 workers serve
//     nothing: all of sockshim's reload, except that the workers it
//     replaces are not the ones serving.

// floorRound is one round of a floor series; it returns the serving
// workers, replaced or not.
type floorRound func(home []string, ln *net.TCPListener, serving []*os.Process) []*os.Process

// floorSeries runs n rounds under 16 clients, one every cycle (or as fast
// as they go when slower). It returns the load's result and the steady p99
// just before.
func floorSeries(tb testing.TB, m *testenv.Manager, bb bins, unit string, n int, cycle time.Duration, round floorRound) (*load.Result, time.Duration) {
	fw := startFloorWorkers(tb, m, bb, unit)
	defer fw.stop()
	o := load.Options{URL: "http://" + fw.ln.Addr().String() + "/", Concurrency: 16}
	steady := steadyP99(tb, o)
	return underLoad(tb, o, func() { paced(n, cycle, func() { fw.run(round) }) }), steady
}

// floorWorkers are the 4 testworkers a floor series reloads beside, which
// the harness started on a listener of its own, in the CPU cgroups (home)
// of a service.
type floorWorkers struct {
	home    []string
	ln      *net.TCPListener
	serving []*os.Process
}

// startFloorWorkers starts unit, a service that only sleeps, and 4 ready
// testworkers in its CPU cgroups.
func startFloorWorkers(tb testing.TB, m *testenv.Manager, bb bins, unit string) *floorWorkers {
	fw := &floorWorkers{home: serviceCPUCgroups(tb, m, unit), ln: floorListener(tb)}
	fw.serving = replaceGeneration(tb, bb, fw.home, fw.ln, nil, 4)
	return fw
}

// run runs one round, which may replace the serving workers.
func (fw *floorWorkers) run(round floorRound) { fw.serving = round(fw.home, fw.ln, fw.serving) }

// stop sends the serving workers SIGTERM.
func (fw *floorWorkers) stop() { stopAll(fw.serving) }

// paced calls round n times, one every cycle, or back to back when a round
// takes longer.
func paced(n int, cycle time.Duration, round func()) {
	for range n {
		began := time.Now()
		round()
		time.Sleep(cycle - time.Since(began))
	}
}

// noopReload installs unit, whose reload does nothing, and returns a round
// that reloads it and, with replace, then replaces the serving workers.
func noopReload(tb testing.TB, m *testenv.Manager, bb bins, unit string, replace bool) floorRound {
	m.WriteUnit(tb, unit+".service", "[Service]\nExecStart=/bin/sleep infinity\nExecReload=/bin/true\n")
	m.MustSystemctl(tb, "start", unit+".service")
	return func(home []string, ln *net.TCPListener, serving []*os.Process) []*os.Process {
		m.MustSystemctl(tb, "reload", unit+".service")
		if replace {
			serving = replaceGeneration(tb, bb, home, ln, serving, 4)
		}
		return serving
	}
}

// idleSockshimReload starts a sockshim app of 4 rolling workers that no
// client uses and returns a round that reloads it until its old
// generation is gone.
func idleSockshimReload(tb testing.TB, m *testenv.Manager, bb bins, unit string) floorRound {
	a := installApp(tb, m, bb, unit, workerConfig(bb, "v1", "rolling", 1, 4))
	a.activate(tb)
	sup := status(tb, a.ctl).PID
	return func(_ []string, _ *net.TCPListener, serving []*os.Process) []*os.Process {
		reloadAndWait(tb, m, unit, sup)
		return serving
	}
}

// floorListener is a loopback listener for the floor's workers, closed
// when the test ends.
func floorListener(tb testing.TB) *net.TCPListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// serviceCPUCgroups starts unit, a service that only sleeps, and returns
// the directories of its cgroups in every hierarchy that can schedule CPU
// by group: a v1 hierarchy with the cpu controller, and the v2 one.
func serviceCPUCgroups(tb testing.TB, m *testenv.Manager, unit string) []string {
	m.WriteUnit(tb, unit+".service", "[Service]\nExecStart=/bin/sleep infinity\n")
	m.MustSystemctl(tb, "start", unit+".service")
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		tb.Fatal(err)
	}
	type v1Mount struct {
		dir  string
		opts []string // super options: the controllers, among others
	}
	var v1 []v1Mount
	var v2 string
	for _, line := range strings.Split(string(mounts), "\n") {
		left, right, ok := strings.Cut(line, " - ")
		fields, super := strings.Fields(left), strings.Fields(right)
		if !ok || len(fields) < 5 || len(super) < 3 {
			continue
		}
		switch super[0] {
		case "cgroup2":
			v2 = fields[4]
		case "cgroup":
			v1 = append(v1, v1Mount{fields[4], strings.Split(super[2], ",")})
		}
	}
	own, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", m.MainPID(tb, unit+".service")))
	if err != nil {
		tb.Fatal(err)
	}
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			if v2 != "" {
				dirs = append(dirs, filepath.Join(v2, parts[2]))
			}
			continue
		}
		ctrls := strings.Split(parts[1], ",")
		if !slices.Contains(ctrls, "cpu") {
			continue
		}
		i := slices.IndexFunc(v1, func(mnt v1Mount) bool {
			return !slices.ContainsFunc(ctrls, func(c string) bool { return !slices.Contains(mnt.opts, c) })
		})
		if i < 0 {
			tb.Fatalf("no mount of the cgroup v1 hierarchy %q of %s", parts[1], unit)
		}
		dirs = append(dirs, filepath.Join(v1[i].dir, parts[2]))
	}
	if len(dirs) == 0 {
		tb.Fatalf("no cgroup of %s to put the floor's workers in:\n%s", unit, own)
	}
	return dirs
}

// replaceGeneration starts count testworkers on ln, one at a time, each
// moved into the cgroups home, waits for each one's READY=1 and then sends
// SIGTERM to the process of old in its slot; it returns the new processes.
func replaceGeneration(tb testing.TB, bb bins, home []string, ln *net.TCPListener, old []*os.Process, count int) []*os.Process {
	var next []*os.Process
	for i := range count {
		next = append(next, startReady(tb, bb, home, ln))
		if i < len(old) {
			stopAll(old[i : i+1])
		}
	}
	return next
}

// startReady starts a testworker serving ln as its descriptor 3, moves it
// into the cgroups home and returns once it has sent READY=1 to a notify
// socket of its own. It forks with syscall.ForkExec and the listener's raw
// descriptor: exec.Cmd would call Fd on it, which puts the socket, shared
// with every worker, in blocking mode, and a worker blocked in accept(2)
// then never drains.
func startReady(tb testing.TB, bb bins, home []string, ln *net.TCPListener) *os.Process {
	up := newUpstream(tb)
	defer up.conn.Close()
	null, err := unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Close(null)
	raw, err := ln.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var pid int
	var ferr error
	err = raw.Control(func(fd uintptr) {
		pid, ferr = syscall.ForkExec(bb.testworker, []string{"testworker", "-listen-fd3", "-version", "floor"}, &syscall.ProcAttr{
			Env:   append(os.Environ(), "NOTIFY_SOCKET="+up.path),
			Files: []uintptr{uintptr(null), uintptr(null), uintptr(null), fd},
		})
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		tb.Fatalf("starting testworker: %v", err)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		tb.Fatal(err)
	}
	for _, dir := range home {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			tb.Fatalf("moving testworker pid %d into %s: %v", pid, dir, err)
		}
	}
	up.await(tb, "READY=1", 10*time.Second)
	return p
}

// stopAll sends SIGTERM to each process, which drains and exits, and reaps
// it in the background.
func stopAll(procs []*os.Process) {
	for _, p := range procs {
		_ = p.Signal(syscall.SIGTERM)
		go p.Wait()
	}
}

// TestReplaceGeneration checks the floor series' stand-in for a new
// generation: every process of a round becomes ready in the service's CPU
// cgroups and answers on the shared socket, and each round's processes exit
// once the next round or stopAll replaces them.
func TestReplaceGeneration(t *testing.T) {
	bb := build(t)
	m := testenv.StartUserManager(t)
	home := serviceCPUCgroups(t, m, "floor-home")
	ln := floorListener(t)
	first := replaceGeneration(t, bb, home, ln, nil, 2)
	second := replaceGeneration(t, bb, home, ln, first, 2)
	awaitExit(t, pids(first))
	if a := get(t, "http://"+ln.Addr().String()+"/"); a.version != "floor" {
		t.Fatalf("answer %+v, want version floor", a)
	}
	for _, dir := range home {
		procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		for _, pid := range pids(second) {
			if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(pid)) {
				t.Errorf("testworker pid %d is not in %s", pid, dir)
			}
		}
	}
	stopAll(second)
	awaitExit(t, pids(second))
}

func pids(procs []*os.Process) []int {
	var out []int
	for _, p := range procs {
		out = append(out, p.Pid)
	}
	return out
}
