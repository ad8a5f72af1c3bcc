package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/internal/procfs"
	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// reloadsUnderLoad is how many `systemctl reload` each load run performs.
var reloadsUnderLoad = envInt("SOCKSHIM_E2E_RELOADS", 100)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// workerConfig is a [[worker]] block for the testworker.
func workerConfig(b bins, version, strategy string, surge, count int, extra ...string) string {
	args := append([]string{b.testworker, "-version", version}, extra...)
	return fmt.Sprintf(`
[[worker]]
name = "tw"
command = %s
count = %d
strategy = %q
surge = %d
ready_timeout = "5s"
drain_timeout = "10s"
`, tomlList(args...), count, strategy, surge)
}

// checkGeneration asserts that every serving worker runs generation gen.
func checkGeneration(t *testing.T, a *app, gen, count int) {
	t.Helper()
	st := status(t, a.ctl)
	serving := 0
	for _, g := range st.Groups {
		for _, w := range g.Workers {
			if w.State == "draining" {
				if w.Generation >= gen {
					t.Fatalf("worker %d of generation %d draining after reload to %d", w.ID, w.Generation, gen)
				}
				continue
			}
			if w.Generation != gen || w.State != "ready" {
				t.Fatalf("after reload to generation %d: worker %d is generation %d, %s\nstatus: %s", gen, w.ID, w.Generation, w.State, st.Line)
			}
			serving++
		}
	}
	if serving != count {
		t.Fatalf("after reload to generation %d: %d serving workers, want %d", gen, serving, count)
	}
}

// TestReloadUnderLoad does many `systemctl --user reload` in a row while the
// load client runs at full speed, for each strategy and client mode, and
// asserts that not one request failed, that every reload moved every worker
// to the new generation, and that the answers switched to the new version.
func TestReloadUnderLoad(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	cases := []struct {
		strategy  string
		surge     int
		keepAlive bool
	}{
		{"rolling", 1, false},
		{"rolling", 1, true},
		{"parallel", 3, false}, // the whole generation at once, the default
		{"parallel", 1, true},  // one new worker at a time
		{"rolling", 0, false},
	}
	var report []string
	for i, c := range cases {
		name := fmt.Sprintf("%s-surge%d-keepalive=%v", c.strategy, c.surge, c.keepAlive)
		t.Run(name, func(t *testing.T) {
			const count = 3
			unit := fmt.Sprintf("rl%d", i)
			a := installApp(t, m, b, unit, workerConfig(b, "v1", c.strategy, c.surge, count))
			a.activate(t)

			var lat []time.Duration
			res := underLoad(t, load.Options{URL: a.url, Concurrency: 16, KeepAlive: c.keepAlive}, func() {
				for n := 1; n <= reloadsUnderLoad; n++ {
					version := fmt.Sprintf("v%d", n+1)
					a.rewrite(t, workerConfig(b, version, c.strategy, c.surge, count))
					start := time.Now()
					if out, err := m.Systemctl("reload", unit+".service"); err != nil {
						t.Fatalf("reload %d: %v\n%s", n, err, out)
					}
					lat = append(lat, time.Since(start))
					checkGeneration(t, a, n+1, count)
					if got := get(t, a.url); got.version != version {
						t.Fatalf("reload %d: answer from version %q, want %q", n, got.version, version)
					}
				}
			})
			slices.Sort(lat)
			line := resultRow("sockshim reload, "+name, lat, res)
			report = append(report, line)
			t.Logf("%s\nload: %s", line, res)
			if res.Failed() != 0 {
				t.Errorf("%d failed requests during %d reloads: %v", res.Failed(), reloadsUnderLoad, res.Failures)
			}
			final := fmt.Sprintf("v%d", reloadsUnderLoad+1)
			if res.Versions[final] == 0 {
				t.Errorf("no answer from the final version %s under load: %v", final, res.Versions)
			}
			checkNoLeaks(t, a)
			m.MustSystemctl(t, "stop", unit+".service", unit+".socket")
		})
	}
	for _, drain := range []string{"tracked", "shutdown"} {
		t.Run("restart-without-sockshim-drain="+drain, func(t *testing.T) {
			report = append(report, restartWithoutSockshim(t, m, b, drain))
		})
	}
	writeResults(t, "reload-under-load.md", "| case | reloads | requests | failed | idle keep-alive retries | longest gap | p99 latency | reload p50 | reload p99 |\n|---|---|---|---|---|---|---|---|---|\n"+strings.Join(report, "\n")+"\n")
}

func resultRow(name string, lat []time.Duration, res *load.Result) string {
	slices.Sort(lat)
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %s | %s | %s | %s |", name, len(lat), res.Requests, res.Failed(), res.IdleRetries,
		res.LongestGap.Round(time.Millisecond), res.P99.Round(time.Millisecond),
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond))
}

// restartWithoutSockshim is the comparison: the same testworker, socket-
// activated directly by systemd, restarted with `systemctl restart` under the
// same load. It shows what a deploy costs without sockshim. Its failures are
// reported, not asserted: they are the other program's behaviour.
//
// drain picks the testworker's drain: "tracked" (lossless) or "shutdown"
// (http.Server.Shutdown alone, what most Go servers do).
func restartWithoutSockshim(t *testing.T, m *testenv.Manager, b bins, drain string) string {
	unit := "plain-" + drain
	url := plainUnit(t, m, b, unit, drain)
	res, lat := restartSeries(t, m, url, unit, reloadsUnderLoad)
	if res.OK == 0 {
		t.Fatalf("the comparison run served nothing: %s", res)
	}
	t.Logf("systemctl restart without sockshim: %s %v", res, res.Examples)
	m.MustSystemctl(t, "stop", unit+".service", unit+".socket")
	return resultRow("comparison: systemctl restart, no sockshim, worker drain="+drain, lat, res)
}

// checkNoLeaks asserts that sockshim has no zombie children and holds
// exactly the descriptors it needs once old generations are gone: per live
// worker one notify proxy socket, one stderr pipe and two pidfds (os/exec's
// handle on the child, and the one on the poller that tells its exit);
// besides those only the passed socket, the control socket, its socket to
// the service manager and the trampoline's image.
func checkNoLeaks(t *testing.T, a *app) {
	t.Helper()
	pid := status(t, a.ctl).PID
	waitFor(t, 15*time.Second, "old generations to finish draining", func() bool {
		return len(workerPIDs(status(t, a.ctl), "draining")) == 0
	})
	if z := testenv.Zombies(pid); len(z) > 0 {
		t.Errorf("zombie children of sockshim: %v", z)
	}
	live := len(workerPIDs(status(t, a.ctl), ""))
	want := map[string]int{"socket": live + 3, "pipe": live, "pidfd": 2 * live, "trampoline": 1}
	// The status call's own connection may still be closing on the server
	// side; the counts must settle to exactly the expected ones.
	var got map[string]int
	var fds map[int]string
	deadline := time.Now().Add(2 * time.Second)
	for {
		var err error
		if fds, err = procfs.FDs(pid); err != nil {
			t.Fatal(err)
		}
		got = map[string]int{}
		for _, target := range fds {
			switch {
			case strings.HasPrefix(target, "socket:"):
				got["socket"]++
			case strings.HasPrefix(target, "pipe:"):
				got["pipe"]++
			case target == "anon_inode:[pidfd]":
				got["pidfd"]++
			case strings.HasSuffix(target, "/"+handoff.BinaryName):
				got["trampoline"]++
			}
		}
		if maps.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !maps.Equal(got, want) {
		t.Errorf("sockshim holds %v descriptors with %d workers, want %v: %v", got, live, want, fds)
	}
}

// TestFailedCanary: a new generation whose first worker exits before it is
// ready makes `systemctl reload` fail; the old generation serves throughout.
func TestFailedCanary(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	a := installApp(t, m, b, "canary", workerConfig(b, "v1", "rolling", 1, 2))
	a.activate(t)

	res := underLoad(t, load.Options{URL: a.url, Concurrency: 8}, func() {
		a.rewrite(t, workerConfig(b, "v2", "rolling", 1, 2, "-exit-before-ready"))
		if out, err := m.Systemctl("reload", "canary.service"); err == nil {
			t.Errorf("systemctl reload succeeded with a crashing canary:\n%s", out)
		}
		// The same through sockshim reload, to see the reason it gives.
		out, err := a.reload()
		if err == nil {
			t.Errorf("sockshim reload exited 0 with a crashing canary")
		}
		for _, want := range []string{"tw[0]", "exit status 3", "before it was ready", "rolled back", "generation 1 keeps serving"} {
			if !strings.Contains(out, want) {
				t.Errorf("reload failure message lacks %q:\n%s", want, out)
			}
		}
		checkGeneration(t, a, 1, 2)
		if got := get(t, a.url); got.version != "v1" {
			t.Errorf("after failed reload the answer is %q, want v1", got.version)
		}
	})
	if res.Failed() != 0 {
		t.Errorf("%d failed requests while the canary failed: %v", res.Failed(), res.Failures)
	}
	if res.Versions["v2"] != 0 {
		t.Errorf("%d answers from the failed generation", res.Versions["v2"])
	}
	t.Logf("failed canary: %s", res)
}

// TestDrainTimeoutKills: a worker that ignores SIGTERM is SIGKILLed at
// drain_timeout, and the reload itself does not wait for that.
func TestDrainTimeoutKills(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	body := func(v string) string {
		return strings.Replace(workerConfig(b, v, "rolling", 1, 1, "-ignore-sigterm"), `drain_timeout = "10s"`, `drain_timeout = "1s"`, 1)
	}
	a := installApp(t, m, b, "stubborn", body("v1"))
	a.activate(t)
	old := workerPIDs(status(t, a.ctl), "ready")
	a.rewrite(t, body("v2"))
	start := time.Now()
	m.MustSystemctl(t, "reload", "stubborn.service")
	testenv.WaitGone(t, old, 5*time.Second)
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("old worker gone after %s, before its drain_timeout of 1s", took)
	}
	if !strings.Contains(m.Log(), "still running at drain_timeout") {
		t.Errorf("the kill is not logged")
	}
}

// TestReloadStorm: 20 reloads requested at once coalesce, every caller gets
// success, and one clean generation remains.
func TestReloadStorm(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	a := installApp(t, m, b, "storm", workerConfig(b, "v1", "rolling", 1, 2))
	a.activate(t)
	a.rewrite(t, workerConfig(b, "v2", "rolling", 1, 2))
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := a.reload(); err != nil {
				errs <- fmt.Errorf("%v: %s", err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("reload in storm: %v", err)
	}
	st := status(t, a.ctl)
	if st.Reloads >= 20 || st.Reloads < 1 {
		t.Errorf("20 concurrent requests ran %d reloads; want them coalesced", st.Reloads)
	}
	checkGeneration(t, a, st.Generation, 2)
	if st.Generation != 1+st.Reloads {
		t.Errorf("generation %d after %d reloads", st.Generation, st.Reloads)
	}
	waitFor(t, 15*time.Second, "old generations to drain", func() bool {
		return len(workerPIDs(status(t, a.ctl), "draining")) == 0
	})
	t.Logf("20 concurrent reload requests ran %d reloads", st.Reloads)
}

// writeResults stores a results table under testdata/results (kept in the
// repository so figures are reviewable next to the code that made them).
func writeResults(t *testing.T, name, text string) {
	t.Helper()
	dir := filepath.Join("..", "results")
	os.MkdirAll(dir, 0o755)
	how := "go test ./e2e"
	if testenv.RaceEnabled {
		how = "go test -race ./e2e (binaries built with -race: slower than production)"
	}
	stamp := fmt.Sprintf("<!-- written by %s on %s -->\n", how, time.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(dir, name), []byte(stamp+text), 0o644); err != nil {
		t.Errorf("writing results: %v", err)
	}
}

// TestLongReloadExtendsTimeout: a reload that makes progress may take longer
// than the unit's TimeoutStartSec= (which bounds ExecReload=): every worker
// that becomes ready sends EXTEND_TIMEOUT_USEC, and systemd waits.
func TestLongReloadExtendsTimeout(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	slow := func(v string) string {
		return workerConfig(b, v, "rolling", 1, 4, "-start-delay", "800ms")
	}
	a := installApp(t, m, b, "slow", slow("v1"))
	m.WriteUnit(t, "slow.service.d/timeout.conf", "[Service]\nTimeoutStartSec=2\n")
	a.activate(t)
	a.rewrite(t, slow("v2"))
	start := time.Now()
	if out, err := m.Systemctl("reload", "slow.service"); err != nil {
		t.Fatalf("a reload making progress failed after %s: %v\n%s", time.Since(start).Round(time.Millisecond), err, out)
	}
	took := time.Since(start)
	if took < 3*time.Second {
		t.Fatalf("the reload took %s; the test needs it to outlast TimeoutStartSec=2 to mean anything", took)
	}
	checkGeneration(t, a, 2, 4)
	t.Logf("reload of 4 workers, 800 ms each, took %s under TimeoutStartSec=2", took.Round(time.Millisecond))
}

// TestRestartUnderLoad: `systemctl restart` replaces sockshim and every
// worker, reloadable or not; with the socket held by systemd and workers that
// drain, clients still see no failure, only a pause.
func TestRestartUnderLoad(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	a := installApp(t, m, b, "restart", workerConfig(b, "v1", "rolling", 1, 2)+"reloadable = false\n")
	// Restarts count against the start limit (5 in 10 s by default).
	m.WriteUnit(t, "restart.service.d/limit.conf", "[Unit]\nStartLimitIntervalSec=0\n")
	a.activate(t)
	const restarts = 10
	var pids []int
	res := underLoad(t, load.Options{URL: a.url, Concurrency: 16}, func() {
		for range restarts {
			pids = append(pids, m.MainPID(t, "restart.service"))
			m.MustSystemctl(t, "restart", "restart.service")
		}
	})
	t.Logf("%d restarts of sockshim: %s", restarts, res)
	if res.Failed() != 0 {
		t.Errorf("%d failed requests during %d restarts: %v %v", res.Failed(), restarts, res.Failures, res.Examples)
	}
	slices.Sort(pids)
	if len(slices.Compact(pids)) != restarts {
		t.Errorf("supervisor pids %v: not a new sockshim per restart", pids)
	}
	if st := status(t, a.ctl); st.Generation != 1 {
		t.Errorf("a restarted sockshim runs generation %d, want 1", st.Generation)
	}
}
