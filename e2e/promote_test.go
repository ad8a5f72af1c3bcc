package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// Health-gated promotion (issue 13): with promote_after, a reload's new
// workers serve beside the old ones for that long and replace them only if
// none exited and every health probe passed. Under systemd and under load:
// a good build is promoted after the bake; a build that dies 2 s after
// READY=1, and one whose health probe starts failing after READY=1, are
// rolled back, `systemctl reload` fails, and not one request fails.

// promoteAfter is the bake of these tests: long enough for a build to fail
// within it, short enough to keep the suite fast.
const promoteAfter = "3s"

// healthCommand checks the one worker it is run for, by the pid sockshim
// gives it: the testworker started with -health-dir FDDIR writes FDDIR/PID.
var healthCommand = tomlList("/bin/sh", "-c",
	`s=$(cat "$0/$SOCKSHIM_WORKER_PID" 2>/dev/null); [ "$s" = ok ] || { echo "worker $SOCKSHIM_WORKER_PID of generation $SOCKSHIM_GENERATION says ${s:-nothing}" >&2; exit 1; }`,
	"FDDIR")

// promoteConfig is workerConfig with promote_after and probe, a line such
// as `health_url = "…"` (or "" for none).
func promoteConfig(b bins, version, strategy string, count int, probe string, extra ...string) string {
	return workerConfig(b, version, strategy, 1, count, extra...) + fmt.Sprintf("promote_after = %q\n%s\n", promoteAfter, probe)
}

// watchStates polls sockshim's status until stop is closed and returns
// every state it reported, in order, without repeats.
func watchStates(sock string, stop <-chan struct{}) func() []string {
	var mu sync.Mutex
	var states []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if r, err := control.Call(sock, control.Request{Command: "status"}, nil); err == nil && r.Status != nil {
				mu.Lock()
				if len(states) == 0 || states[len(states)-1] != r.Status.State {
					states = append(states, r.Status.State)
				}
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() []string {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return states
	}
}

// TestPromoteAfterBake: a good build serves beside the old one for
// promote_after (status says "baking"), passes its health probes, and is
// promoted: the reload succeeds and every worker runs the new generation.
func TestPromoteAfterBake(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	cases := []struct {
		strategy string
		probe    func(a *app) string
	}{
		// The canary alone bakes; health_url reaches any worker.
		{"rolling", func(a *app) string { return fmt.Sprintf("health_url = %q", a.url) }},
		// The whole generation bakes; each worker's own health_command.
		{"parallel", func(*app) string { return "health_command = " + healthCommand }},
	}
	for i, c := range cases {
		t.Run(c.strategy, func(t *testing.T) {
			const count = 2
			unit := fmt.Sprintf("promote%d", i)
			a := installApp(t, m, b, unit, workerConfig(b, "v1", c.strategy, 1, count))
			a.activate(t)
			var states []string
			var took time.Duration
			res := underLoad(t, load.Options{URL: a.url, Concurrency: 8}, func() {
				a.rewrite(t, promoteConfig(b, "v2", c.strategy, count, c.probe(a), "-health-dir", "FDDIR"))
				stop := make(chan struct{})
				seen := watchStates(a.ctl, stop)
				start := time.Now()
				out, err := m.Systemctl("reload", unit+".service")
				took = time.Since(start)
				close(stop)
				states = seen()
				if err != nil {
					t.Fatalf("systemctl reload of a good build: %v\n%s", err, out)
				}
				checkGeneration(t, a, 2, count)
				if got := get(t, a.url); got.version != "v2" {
					t.Errorf("answer from %q after the promotion, want v2", got.version)
				}
			})
			t.Logf("reload with promote_after = %s took %s; states seen: %v; load: %s", promoteAfter, took.Round(time.Millisecond), states, res)
			if !slices.Contains(states, "baking") {
				t.Errorf("status never said baking during the reload: %v", states)
			}
			if res.Failed() != 0 {
				t.Errorf("%d failed requests: %v %v", res.Failed(), res.Failures, res.Examples)
			}
			if res.Versions["v2"] == 0 {
				t.Errorf("no answer from v2 under load: %v", res.Versions)
			}
			m.MustSystemctl(t, "stop", unit+".service", unit+".socket")
		})
	}
}

// TestPromoteRollsBack: a build that dies 2 s after READY=1, and one whose
// health probe fails 1 s after READY=1, are rolled back during the bake:
// `systemctl reload` fails, `sockshim reload` names the cause, not one
// request fails, and the old workers serve on, the same processes.
func TestPromoteRollsBack(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	cases := []struct {
		name     string
		strategy string
		extra    []string
		want     []string
	}{
		{"exits", "rolling", []string{"-exit-after-ready", "2s"},
			[]string{"canary tw[0]", "exited 2", "into promote_after (3s): exit status 3", "rolled back", "generation 1 keeps serving"}},
		{"health", "rolling", []string{"-health-fail-after", "1s"},
			[]string{"canary tw[0]", "failed its health_command", "exit status 1: worker", "of generation", "says failing", "generation 1 keeps serving"}},
		{"health-parallel", "parallel", []string{"-health-fail-after", "1s"},
			[]string{"new worker tw[", "failed its health_command", "says failing", "generation 1 keeps serving"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			const count = 2
			unit := fmt.Sprintf("rollback%d", i)
			a := installApp(t, m, b, unit, workerConfig(b, "v1", c.strategy, 1, count))
			a.activate(t)
			old := readyPIDs(t, a)
			bad := promoteConfig(b, "v2", c.strategy, count, "health_command = "+healthCommand,
				append([]string{"-health-dir", "FDDIR"}, c.extra...)...)
			var out string
			res := underLoad(t, load.Options{URL: a.url, Concurrency: 8}, func() {
				a.rewrite(t, bad)
				if out, err := m.Systemctl("reload", unit+".service"); err == nil {
					t.Errorf("systemctl reload of a build that fails its bake exited 0:\n%s", out)
				}
				checkOldServes(t, a, old)
				// The same through sockshim reload, to read the cause.
				var err error
				if out, err = a.reload(); err == nil {
					t.Errorf("sockshim reload of a build that fails its bake exited 0:\n%s", out)
				}
				checkOldServes(t, a, old)
			})
			t.Logf("load: %s; by version %v; sockshim reload said:\n%s", res, res.Versions, out)
			for _, want := range c.want {
				if !strings.Contains(out, want) {
					t.Errorf("reload failure lacks %q:\n%s", want, out)
				}
			}
			if res.Failed() != 0 {
				t.Errorf("%d failed requests: %v %v", res.Failed(), res.Failures, res.Examples)
			}
			if got := get(t, a.url); got.version != "v1" {
				t.Errorf("answer from %q after the rollbacks, want v1", got.version)
			}
			// The next good deploy is promoted.
			a.rewrite(t, promoteConfig(b, "v3", c.strategy, count, ""))
			if out, err := m.Systemctl("reload", unit+".service"); err != nil {
				t.Fatalf("systemctl reload of a good build after the rollbacks: %v\n%s", err, out)
			}
			checkGeneration(t, a, 4, count)
			m.MustSystemctl(t, "stop", unit+".service", unit+".socket")
		})
	}
}

// checkOldServes asserts, after a rolled-back reload, that sockshim serves
// with exactly the workers it had before: once the new ones are gone, the
// ready workers are the same generation 1 processes (a worker once told to
// drain never serves again).
func checkOldServes(t *testing.T, a *app, old []int) {
	t.Helper()
	waitFor(t, 15*time.Second, "the rolled-back workers to be gone", func() bool {
		st := status(t, a.ctl)
		return st.State == "serving" && len(workerPIDs(st, "ready")) == len(workerPIDs(st, ""))
	})
	st := status(t, a.ctl)
	if got := readyPIDs(t, a); !slices.Equal(got, old) || st.Generation != 1 {
		t.Errorf("after the rollback: generation %d, ready pids %v; want generation 1, pids %v\nstatus: %s", st.Generation, got, old, st.Line)
	}
}
