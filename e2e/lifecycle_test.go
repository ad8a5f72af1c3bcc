package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// The reload rules that do not need a service manager run standalone: the
// test reads sockshim's notify messages itself.

// TestReloadBadConfig: a config that no longer parses aborts the reload with
// an error naming file, line and key; the running generation keeps serving.
func TestReloadBadConfig(t *testing.T) {
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 2))
	before := workerPIDs(status(t, a.ctl), "ready")

	res := underLoad(t, load.Options{URL: a.url, Concurrency: 4}, func() {
		out, err := a.deploy(t, strings.Replace(workerConfig(b, "v2", "rolling", 1, 2), "count =", "cont =", 1))
		if err == nil {
			t.Errorf("reload with a broken config exited 0:\n%s", out)
		}
		for _, want := range []string{"app.toml:", "worker[0].cont: unknown key", `did you mean "count"`, "nothing changed"} {
			if !strings.Contains(out, want) {
				t.Errorf("reload error lacks %q:\n%s", want, out)
			}
		}
	})
	if res.Failed() != 0 {
		t.Errorf("%d failed requests around a rejected config: %v", res.Failed(), res.Failures)
	}
	st := status(t, a.ctl)
	if after := workerPIDs(st, "ready"); !slices.Equal(slices.Sorted(slices.Values(after)), slices.Sorted(slices.Values(before))) {
		t.Errorf("workers changed after a rejected config: %v, before %v", after, before)
	}
	if st.Generation != 1 || st.Reloads != 0 {
		t.Errorf("generation %d after %d reloads, want 1 after 0", st.Generation, st.Reloads)
	}
	// Fixed, the same config reloads.
	out := a.mustDeploy(t, workerConfig(b, "v2", "rolling", 1, 2))
	if !strings.Contains(out, "draining workers stopped accepting after") {
		t.Errorf("the reload did not wait for the old workers to release the sockets:\n%s", out)
	}
	if got := get(t, a.url); got.version != "v2" {
		t.Errorf("answer from %q after the reload, want v2", got.version)
	}
}

// TestSighupReload: SIGHUP reloads, and the service manager hears
// RELOADING=1 with MONOTONIC_USEC and a STATUS naming the reload,
// EXTEND_TIMEOUT_USEC while new workers come up, and READY=1 with a STATUS
// naming the new generation at the end.
func TestSighupReload(t *testing.T) {
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 2))
	a.rewrite(t, workerConfig(b, "v2", "rolling", 1, 2))
	a.sup.signal(t, syscall.SIGHUP)

	msgs := a.up.collect(t, "READY=1", 15*time.Second)
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"RELOADING=1", "MONOTONIC_USEC=", "EXTEND_TIMEOUT_USEC="} {
		if !strings.Contains(all, want) {
			t.Errorf("no %s before the final READY=1; got %q", want, msgs)
		}
	}
	if i := slices.IndexFunc(msgs, func(m string) bool { return strings.Contains(m, "RELOADING=1") }); i < 0 || !strings.Contains(msgs[i], "reloading to gen") {
		t.Errorf("RELOADING=1 without a STATUS naming the reload; got %q", msgs)
	}
	if last := msgs[len(msgs)-1]; !strings.Contains(last, "STATUS=gen 2: tw 2/2 ready") {
		t.Errorf("READY=1 at the end of the reload came with %q, want the gen 2 status", last)
	}
	checkGeneration(t, a, 2, 2)
	if got := get(t, a.url); got.version != "v2" || got.generation != "2" {
		t.Errorf("answer %+v after SIGHUP, want v2 from generation 2", got)
	}
}

// TestStatusCommand: `sockshim status` prints a table, and --json the
// same state as the control protocol's Status.
func TestStatusCommand(t *testing.T) {
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 2))

	out, err := exec.Command(b.sockshim, "status", "-c", a.cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("sockshim status: %v\n%s", err, out)
	}
	for _, want := range []string{"GROUP", "RESTARTS", "gen 1: tw 2/2 ready", "ready"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(b.sockshim, "status", "-c", a.cfgPath, "--json").Output()
	if err != nil {
		t.Fatalf("sockshim status --json: %v", err)
	}
	var st control.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	if st.PID != a.sup.cmd.Process.Pid || len(st.Groups) != 1 || len(st.Groups[0].Workers) != 2 {
		t.Errorf("status --json: %+v", st)
	}
	for _, w := range st.Groups[0].Workers {
		if w.State != "ready" || w.PID == 0 || w.ReadyAt.IsZero() {
			t.Errorf("worker in status --json: %+v", w)
		}
	}
}

// TestLaterWorkerFails: in a rolling reload, a worker after the canary that
// fails stops the rollout. Slots already switched keep the new generation,
// the others keep the old one, the reload reports failure, and not one
// request fails. The next good reload converges.
func TestLaterWorkerFails(t *testing.T) {
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 3))

	// Worker 1 of the new generation refuses to start; 0 (the canary) is fine.
	flaky := failingWorker(b, "v2", "rolling", 1, 3, 1)
	res := underLoad(t, load.Options{URL: a.url, Concurrency: 8}, func() {
		out, err := a.deploy(t, flaky)
		if err == nil {
			t.Errorf("reload exited 0 though worker 1 failed:\n%s", out)
		}
		for _, want := range []string{"tw[1]", "exit status 4", "worker 1 refuses", "stopped mid-rollout (1 of 3 workers run generation 2"} {
			if !strings.Contains(out, want) {
				t.Errorf("reload failure lacks %q:\n%s", want, out)
			}
		}
		gens := generations(status(t, a.ctl), "ready")
		if want := map[int]int{0: 2, 1: 1, 2: 1}; fmt.Sprint(gens) != fmt.Sprint(want) {
			t.Errorf("generation by worker id after the stopped rollout: %v, want %v", gens, want)
		}

		if out, err := a.deploy(t, workerConfig(b, "v3", "rolling", 1, 3)); err != nil {
			t.Errorf("reload after the fix: %v\n%s", err, out)
		}
		checkGeneration(t, a, 3, 3)
	})
	if res.Failed() != 0 {
		t.Errorf("%d failed requests around a stopped rollout: %v", res.Failed(), res.Failures)
	}
	if res.Versions["v2"] == 0 || res.Versions["v3"] == 0 {
		t.Errorf("answers by version %v: want some from v2's canary and from v3", res.Versions)
	}
}

// TestNotReloadable: a reloadable = false group keeps its workers across
// reloads, and a change to its config is reported, not applied.
func TestNotReloadable(t *testing.T) {
	b := build(t)
	groups := func(version string) string {
		return fmt.Sprintf(`
[[worker]]
name = "web"
command = %s

[[worker]]
name = "ws"
command = %s
reloadable = false
`, tomlList(b.testworker, "-version", version), tomlList(b.testworker, "-version", "ws-"+version))
	}
	a := startServing(t, b, groups("v1"))
	kept := groupPIDs(status(t, a.ctl), "ws")

	out := a.mustDeploy(t, groups("v2"))
	if !strings.Contains(out, "group ws is not reloadable: its config changes apply on restart") {
		t.Errorf("reload output does not say the ws change was not applied:\n%s", out)
	}
	st := status(t, a.ctl)
	if got := groupPIDs(st, "ws"); !slices.Equal(got, kept) {
		t.Errorf("ws workers %v after reload, want the same %v", got, kept)
	}
	for _, g := range st.Groups {
		for _, w := range g.Workers {
			want := 2
			if g.Name == "ws" {
				want = 1
			}
			if w.State == "ready" && w.Generation != want {
				t.Errorf("%s[%d] runs generation %d, want %d", g.Name, w.ID, w.Generation, want)
			}
		}
	}
}

func groupPIDs(st *control.Status, group string) []int {
	var pids []int
	for _, g := range st.Groups {
		for _, w := range g.Workers {
			if g.Name == group && w.State == "ready" {
				pids = append(pids, w.PID)
			}
		}
	}
	return pids
}

// TestMaxDraining: workers that never finish draining do not pile up. With
// max_draining = 1, a second reload kills the oldest draining generation
// early, long before its drain_timeout, and says so in the log.
func TestMaxDraining(t *testing.T) {
	b := build(t)
	body := func(v string) string {
		return strings.Replace(workerConfig(b, v, "rolling", 1, 1, "-ignore-sigterm"),
			`drain_timeout = "10s"`, "drain_timeout = \"60s\"\nmax_draining = 1", 1)
	}
	a := startServing(t, b, body("v1"))
	gen1 := workerPIDs(status(t, a.ctl), "ready")

	for _, v := range []string{"v2", "v3"} {
		a.mustDeploy(t, body(v))
	}
	testenv.WaitGone(t, gen1, 5*time.Second)
	draining := status(t, a.ctl).Groups[0].Workers
	var gens []int
	for _, w := range draining {
		if w.State == "draining" {
			gens = append(gens, w.Generation)
		}
	}
	if !slices.Equal(gens, []int{2}) {
		t.Errorf("draining generations %v, want only [2]", gens)
	}
	a.sup.awaitLog(t, "too many generations draining; killing the oldest early")
	a.sup.forceStop(t)
}

// TestWatchdog: with WATCHDOG_USEC set, sockshim pings the manager.
func TestWatchdog(t *testing.T) {
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 1), "WATCHDOG_USEC=400000")
	start := time.Now()
	a.up.await(t, "WATCHDOG=1", 2*time.Second)
	a.up.await(t, "WATCHDOG=1", 2*time.Second)
	t.Logf("two WATCHDOG=1 within %s (WatchdogSec 400ms)", time.Since(start).Round(time.Millisecond))
}

// TestControlSocketRefusesStrangers: only root and sockshim's own uid may
// use the control socket, even when its file mode would let others in, and
// a malformed request is answered with an error that harms nothing.
func TestControlSocketRefusesStrangers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs a client as nobody and needs root")
	}
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 1))
	if fi, err := os.Stat(a.ctl); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode: %v %v, want 0600", fi.Mode(), err)
	}

	// Let nobody reach the socket through the file system; the peer check
	// must still refuse it.
	for p, mode := range map[string]os.FileMode{a.ctl: 0o666, filepath.Dir(a.ctl): 0o755, filepath.Dir(filepath.Dir(a.ctl)): 0o755} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(b.sockshim, "status", "-c", a.cfgPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "uid 65534 may not control this sockshim") {
		t.Errorf("status as nobody: %v\n%s", err, out)
	}

	c, err := net.Dial("unix", a.ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "{not json\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, "malformed request") {
		t.Errorf("answer to a malformed request: %q", line)
	}

	for _, want := range []string{"control connection refused", "peer_uid=65534", "malformed control request"} {
		a.sup.awaitLog(t, want)
	}
	if got := get(t, a.url); got.version != "v1" {
		t.Errorf("answer %+v after the refused requests", got)
	}
}

// TestUserAndGroup: user = and group = drop the workers' privileges; the
// sockets they were handed still serve.
func TestUserAndGroup(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("dropping privileges needs root")
	}
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 2)+"user = \"nobody\"\ngroup = \"nogroup\"\n")
	for _, pid := range workerPIDs(status(t, a.ctl), "ready") {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534\n", "Gid:\t65534\t65534\t65534\t65534\n", "Groups:\t65534 \n"} {
			if !strings.Contains(string(st), want) {
				t.Errorf("worker %d: /proc status lacks %q:\n%s", pid, want, st)
			}
		}
	}
	if got := get(t, a.url); got.version != "v1" {
		t.Errorf("answer %+v from the unprivileged workers", got)
	}
}

// failingWorker is workerConfig whose worker id `failID` exits at start.
func failingWorker(b bins, version, strategy string, surge, count, failID int) string {
	return strings.Replace(workerConfig(b, version, strategy, surge, count), "command = [",
		fmt.Sprintf(`command = ["/bin/sh", "-c", "if [ \"$SOCKSHIM_WORKER_ID\" = %d ]; then echo worker %d refuses >&2; exit 4; fi; exec \"$0\" \"$@\"", `, failID, failID), 1)
}

// generations maps worker id to generation for the workers in state.
func generations(st *control.Status, state string) map[int]int {
	gens := map[int]int{}
	for _, g := range st.Groups {
		for _, w := range g.Workers {
			if w.State == state {
				gens[w.ID] = w.Generation
			}
		}
	}
	return gens
}

// TestParallelFailureRollsBack: in a parallel reload any failing worker
// rolls the whole new generation back; the old one is untouched.
func TestParallelFailureRollsBack(t *testing.T) {
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "parallel", 1, 3))
	old := workerPIDs(status(t, a.ctl), "ready")
	res := underLoad(t, load.Options{URL: a.url, Concurrency: 8}, func() {
		out, err := a.deploy(t, failingWorker(b, "v2", "parallel", 1, 3, 2))
		if err == nil || !strings.Contains(out, "group tw rolled back, generation 1 keeps serving") || !strings.Contains(out, "worker 2 refuses") {
			t.Errorf("reload: %v\n%s", err, out)
		}
	})
	if res.Failed() != 0 {
		t.Errorf("%d failed requests around a rolled-back parallel reload: %v", res.Failed(), res.Failures)
	}
	// New workers accept as soon as they listen, so some requests may have
	// been answered by v2 while the reload ran; once it has ended, the
	// rolled-back workers have let go of the socket.
	t.Logf("answers by version during the reload: %v", res.Versions)
	for range 20 {
		if got := get(t, a.url); got.version != "v1" {
			t.Fatalf("answer %+v after the rollback", got)
		}
	}
	st := status(t, a.ctl)
	if got := workerPIDs(st, "ready"); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(old))) {
		t.Errorf("serving workers %v after the rollback, want the old ones %v", got, old)
	}
}

// TestSurgeZeroCanary: the canary starts beside the old worker whatever
// surge says. With surge = 0 a canary that exits before it is ready leaves
// every old worker serving, never signalled, and not one request fails; a
// good deploy never runs more than count+1 workers at once.
func TestSurgeZeroCanary(t *testing.T) {
	b := build(t)
	for _, count := range []int{1, 3} {
		t.Run(fmt.Sprintf("canary fails, count %d", count), func(t *testing.T) {
			a := startServing(t, b, workerConfig(b, "v1", "rolling", 0, count))
			old := readyPIDs(t, a)
			var out string
			res := underLoad(t, load.Options{URL: a.url, Concurrency: 4, Duration: 30 * time.Second}, func() {
				var err error
				if out, err = a.deploy(t, workerConfig(b, "v2", "rolling", 0, count, "-exit-before-ready")); err == nil {
					t.Errorf("reload exited 0 though the canary exited:\n%s", out)
				}
			})
			for _, want := range []string{"tw[0]", "exit status 3", "exiting before ready"} {
				if !strings.Contains(out, want) {
					t.Errorf("reload error lacks %q:\n%s", want, out)
				}
			}
			if res.Failed() != 0 {
				t.Errorf("%d failed requests around a failed surge = 0 canary: %v %v", res.Failed(), res.Failures, res.Examples)
			}
			checkUntouched(t, a, old)
		})
	}

	t.Run("good deploy, count 3", func(t *testing.T) {
		const count = 3
		a := startServing(t, b, workerConfig(b, "v1", "rolling", 0, count))
		// Each new worker takes 200 ms to be ready: the reload lasts at least
		// 600 ms, many times the 10 ms between the status polls below.
		v2 := workerConfig(b, "v2", "rolling", 0, count, "-start-delay", "200ms")
		var polls, reloading, most int
		res := underLoad(t, load.Options{URL: a.url, Concurrency: 4, Duration: 30 * time.Second}, func() {
			a.rewrite(t, v2)
			done := make(chan error, 1)
			var out string
			go func() {
				var err error
				out, err = a.reload()
				done <- err
			}()
			deadline := time.After(20 * time.Second)
			for {
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("reload: %v\n%s", err, out)
					}
					return
				case <-deadline:
					t.Fatalf("reload still running after 20s")
				case <-time.After(10 * time.Millisecond):
				}
				st := status(t, a.ctl)
				polls++
				if st.State == "reloading" {
					reloading++
				}
				if live := len(workerPIDs(st, "starting")) + len(workerPIDs(st, "ready")); live > most {
					most = live
					if most > count+1 {
						t.Errorf("%d workers starting or ready at once, want at most %d: %s", live, count+1, st.Line)
					}
				}
			}
		})
		t.Logf("%d status polls, %d during the reload; at most %d workers starting or ready", polls, reloading, most)
		if reloading == 0 {
			t.Fatal("no status poll saw the reload running: the bound was not checked")
		}
		if res.Failed() != 0 {
			t.Errorf("%d failed requests around a surge = 0 reload: %v %v", res.Failed(), res.Failures, res.Examples)
		}
		checkGeneration(t, a, 2, count)
	})
}

// TestRespawnRules: a crashed worker is respawned into its group's current
// generation; a crashed worker of a draining generation is not respawned.
func TestRespawnRules(t *testing.T) {
	b := build(t)
	body := func(v string) string {
		return strings.Replace(workerConfig(b, v, "rolling", 1, 2, "-ignore-sigterm"), `drain_timeout = "10s"`, `drain_timeout = "30s"`, 1)
	}
	a := startServing(t, b, body("v1"))
	out := a.mustDeploy(t, body("v2"))
	// Workers that ignore their stop signal keep accepting: the reload
	// waits for them a bounded time, then says so.
	if !strings.Contains(out, "still hold the listening sockets after") {
		t.Errorf("the reload does not name the old workers that keep their listeners:\n%s", out)
	}
	st := status(t, a.ctl)
	draining, serving := workerPIDs(st, "draining"), workerPIDs(st, "ready")
	if len(draining) != 2 || len(serving) != 2 {
		t.Fatalf("want 2 draining and 2 serving workers: %+v", st.Groups)
	}

	// A draining worker that dies is gone for good.
	syscall.Kill(draining[0], syscall.SIGKILL)
	testenv.WaitGone(t, draining[:1], 5*time.Second)
	// A serving worker that dies comes back, in generation 2, as v2.
	syscall.Kill(serving[0], syscall.SIGKILL)
	waitFor(t, 10*time.Second, "the crashed worker to be respawned", func() bool {
		ready := workerPIDs(status(t, a.ctl), "ready")
		return len(ready) == 2 && !slices.Contains(ready, serving[0])
	})
	st = status(t, a.ctl)
	if got := generations(st, "ready"); fmt.Sprint(got) != fmt.Sprint(map[int]int{0: 2, 1: 2}) {
		t.Errorf("serving generations %v, want both 2", got)
	}
	if got := workerPIDs(st, "draining"); !slices.Equal(got, draining[1:]) {
		t.Errorf("draining workers %v, want only %v (no respawn of the killed one)", got, draining[1:])
	}
	restarts := 0
	for _, w := range st.Groups[0].Workers {
		restarts += w.Restarts
	}
	if restarts != 1 {
		t.Errorf("%d restarts in status, want 1", restarts)
	}
	a.sup.forceStop(t)
}

// TestReadyCommandEnvDir: with ready = "command" the probe, not the worker's
// own READY=1, decides readiness; the probe sees which worker it checks; the
// worker runs in dir with env added.
func TestReadyCommandEnvDir(t *testing.T) {
	b := build(t)
	a := startStandalone(t, b, fmt.Sprintf(`
[[worker]]
name = "tw"
command = ["/bin/sh", "-c", "echo \"$APP_GREETING $(pwd)\" > env.$$; exec \"$0\" \"$@\"", %q, "-version", "v1"]
ready = "command"
ready_command = ["/bin/sh", "-c", "test -e FDDIR/go.$SOCKSHIM_WORKER_PID"]
ready_timeout = "20s"
env = { APP_GREETING = "hello" }
dir = "FDDIR"
`, b.testworker))
	// The testworker sends READY=1 at once; it must not count.
	var pid int
	waitFor(t, 10*time.Second, "the worker to start", func() bool {
		r, err := control.Call(a.ctl, control.Request{Command: "status"}, nil)
		if err != nil {
			return false // not listening yet
		}
		if pids := workerPIDs(r.Status, "starting"); len(pids) == 1 {
			pid = pids[0]
		}
		return pid != 0
	})
	time.Sleep(time.Second)
	if st := status(t, a.ctl); len(workerPIDs(st, "ready")) != 0 {
		t.Fatalf("worker ready before its ready_command succeeded: %s", st.Line)
	}
	if err := os.WriteFile(filepath.Join(a.fdDir, fmt.Sprintf("go.%d", pid)), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a.up.await(t, "READY=1", 5*time.Second)
	got, err := os.ReadFile(filepath.Join(a.fdDir, fmt.Sprintf("env.%d", pid)))
	if want := "hello " + a.fdDir + "\n"; err != nil || string(got) != want {
		t.Errorf("worker saw %q (%v), want %q: env or dir not applied", got, err, want)
	}
}

// TestReadyTimeout: a worker whose ready_command never succeeds is stopped
// at ready_timeout, with the probe's last output in the log, and its slot
// gets a new worker after a backoff: never an empty slot.
func TestReadyTimeout(t *testing.T) {
	b := build(t)
	a := startStandalone(t, b, fmt.Sprintf(`
[[worker]]
name = "tw"
command = %s
ready = "command"
ready_command = ["/bin/sh", "-c", "echo backend unreachable; exit 1"]
ready_timeout = "1s"
drain_timeout = "2s"
`, tomlList(b.testworker, "-version", "v1")))
	a.sup.awaitLog(t, "worker not ready within ready_timeout, stopping it")
	a.sup.awaitLog(t, "ready_command never succeeded")
	a.sup.awaitLog(t, "backend unreachable")
	a.sup.awaitLog(t, `reason="not ready within ready_timeout (1s)"`)
	waitFor(t, 10*time.Second, "the slot to get a new worker", func() bool {
		return strings.Count(a.sup.log.String(), `msg="worker started"`) >= 2
	})
	if st := status(t, a.ctl); len(workerPIDs(st, "ready")) != 0 {
		t.Errorf("a worker is ready though its probe always fails: %s", st.Line)
	}
}

// TestGroupsAddedAndRemoved: a reload starts a group new in the config and
// drains one that left it, which then disappears from status.
func TestGroupsAddedAndRemoved(t *testing.T) {
	b := build(t)
	group := func(name, version string) string {
		return fmt.Sprintf("\n[[worker]]\nname = %q\ncommand = %s\n", name, tomlList(b.testworker, "-version", version))
	}
	a := startServing(t, b, group("web", "v1")+group("old", "v1"))
	gone := groupPIDs(status(t, a.ctl), "old")

	a.mustDeploy(t, group("web", "v2")+group("new", "v2"))
	testenv.WaitGone(t, gone, 5*time.Second)
	waitFor(t, 10*time.Second, "generation 1 to finish draining", func() bool {
		return len(workerPIDs(status(t, a.ctl), "draining")) == 0
	})
	var names []string
	for _, g := range status(t, a.ctl).Groups {
		names = append(names, g.Name)
		for _, w := range g.Workers {
			if w.State != "ready" || w.Generation != 2 {
				t.Errorf("%s[%d]: %s, generation %d", g.Name, w.ID, w.State, w.Generation)
			}
		}
	}
	if !slices.Equal(names, []string{"web", "new"}) {
		t.Errorf("groups after the reload: %v, want [web new]", names)
	}
}
