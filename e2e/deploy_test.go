package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/internal/procfs"
	"github.com/sockshim/sockshim/testenv/load"
)

// Deploys whose workers cannot even be started (issue 9): the reload fails
// with the cause, the running generation keeps serving, and the supervisor
// takes the next deploy.

// deployLoad is the load around a deploy that must not disturb anything:
// light, and bounded even if the deploy hangs.
var deployLoad = load.Options{Concurrency: 2, Duration: 30 * time.Second}

// configError matches a config error's FILE:LINE: prefix.
var configError = regexp.MustCompile(`app\.toml:\d+: `)

// TestFailedDeployKeepsServing: a deploy that gives a group a user that does
// not exist, or a dir that does not, fails the reload with an error naming
// the bad value, caught by the config check or by the spawn. sockshim keeps
// running, every worker stays the generation 1 process it was, not one
// request fails, and the next good deploy serves.
func TestFailedDeployKeepsServing(t *testing.T) {
	b := build(t)
	const badUser = "no-such-user"
	if _, err := user.Lookup(badUser); err == nil {
		t.Fatalf("user %q exists on this machine; the test needs it not to", badUser)
	}
	badDir := filepath.Join(t.TempDir(), "no-such-dir")
	cases := []struct {
		name   string
		groups []string
		bad    int    // index of the group the bad deploy breaks
		key    string // user or dir
		value  string
	}{
		{"user", []string{"hello"}, 0, "user", badUser},
		{"dir", []string{"hello"}, 0, "dir", badDir},
		{"user in the second of two groups", []string{"hello", "world"}, 1, "user", badUser},
		{"dir in the first of two groups", []string{"hello", "world"}, 0, "dir", badDir},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// config is the [[worker]] part: count = 2 per group; bad < 0
			// breaks none.
			config := func(version string, bad int) string {
				var s strings.Builder
				for i, name := range c.groups {
					fmt.Fprintf(&s, "\n[[worker]]\nname = %q\ncommand = %s\ncount = 2\nready_timeout = \"5s\"\ndrain_timeout = \"10s\"\n",
						name, tomlList(b.testworker, "-version", version))
					if i == bad {
						fmt.Fprintf(&s, "%s = %q\n", c.key, c.value)
					}
				}
				return s.String()
			}
			a := startServing(t, b, config("v1", -1))
			old := readyPIDs(t, a)

			var out string
			o := deployLoad
			o.URL = a.url
			res := underLoad(t, o, func() {
				var err error
				if out, err = a.deploy(t, config("v2", c.bad)); err == nil {
					t.Errorf("reload with %s = %q in group %s exited 0:\n%s", c.key, c.value, c.groups[c.bad], out)
				}
			})
			t.Logf("load: %s; by version %v", res, res.Versions)
			if !strings.Contains(out, c.value) {
				t.Errorf("reload error does not name %s %q:\n%s", c.key, c.value, out)
			}
			if res.Failed() != 0 {
				t.Errorf("%d failed requests around the failed deploy: %v %v", res.Failed(), res.Failures, res.Examples)
			}
			checkUntouched(t, a, old)

			// A failed reload still uses up its generation number; a config
			// the supervisor refused does not start one.
			gen := 3
			if configError.MatchString(out) {
				gen = 2
			}
			a.mustDeploy(t, config("v2", -1))
			checkGeneration(t, a, gen, 2*len(c.groups))
			if got := get(t, a.url); got.version != "v2" || got.generation != strconv.Itoa(gen) {
				t.Errorf("answer %+v after the good deploy, want v2 from generation %d", got, gen)
			}
		})
	}
}

// TestSpawnFailsSynchronously: a spawn failure no config check can foresee.
// sockshim's RLIMIT_NOFILE is lowered so that a reload's control connection
// and notify socket still fit but a new worker's handoff socket pair does
// not. The reload fails naming the cause, generation 1 keeps serving, and
// once the limit is back the same deploy succeeds.
func TestSpawnFailsSynchronously(t *testing.T) {
	b := build(t)
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatalf("this test lowers sockshim's RLIMIT_NOFILE with prlimit (util-linux): %v", err)
	}
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 2))
	pid := a.sup.cmd.Process.Pid
	// Before any control connection, so that none is counted.
	fds, err := procfs.FDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	soft, hard := nofile(t, pid)
	old := readyPIDs(t, a)
	// The lowest limit that leaves exactly 2 descriptor numbers free: one
	// for the accepted control connection, one that the config read borrows
	// and the worker's notify socket then keeps.
	limit, free := 0, 0
	for ; free < 2; limit++ {
		if _, open := fds[limit]; !open {
			free++
		}
	}
	// Only the soft limit moves, so that no capability is needed to raise
	// it back.
	setSoft := func(soft string) {
		t.Helper()
		if out, err := exec.Command(prlimit, "--pid", strconv.Itoa(pid), "--nofile="+soft+":"+hard).CombinedOutput(); err != nil {
			t.Fatalf("prlimit: %v\n%s", err, out)
		}
	}
	setSoft(strconv.Itoa(limit))
	t.Logf("sockshim has %d descriptors open; its soft RLIMIT_NOFILE lowered from %s to %d", len(fds), soft, limit)

	var out string
	o := deployLoad
	o.URL = a.url
	res := underLoad(t, o, func() {
		if out, err = a.deploy(t, workerConfig(b, "v2", "rolling", 1, 2)); err == nil {
			t.Errorf("reload exited 0 though sockshim could not open a descriptor:\n%s", out)
		}
	})
	t.Logf("load: %s; reload said:\n%s", res, out)
	if !strings.Contains(out, "too many open files") {
		t.Errorf("reload error does not name the cause (too many open files):\n%s", out)
	}
	if strings.Contains(out, "open "+a.cfgPath) {
		t.Fatalf("reading the config failed, not the spawn; the limit is too low to test a spawn:\n%s", out)
	}
	if res.Failed() != 0 {
		t.Errorf("%d failed requests around the failed spawn: %v %v", res.Failed(), res.Failures, res.Examples)
	}
	checkUntouched(t, a, old)

	setSoft(soft)
	a.mustDeploy(t, workerConfig(b, "v2", "rolling", 1, 2))
	checkGeneration(t, a, 3, 2)
	if got := get(t, a.url); got.version != "v2" || got.generation != "3" {
		t.Errorf("answer %+v after the limit was raised, want v2 from generation 3", got)
	}
}

// readyPIDs lists the pids of the app's ready workers, sorted.
func readyPIDs(t *testing.T, a *app) []int {
	t.Helper()
	return slices.Sorted(slices.Values(workerPIDs(status(t, a.ctl), "ready")))
}

// checkUntouched asserts, after a failed reload, that sockshim still runs and
// serves with exactly the workers it had before, all of generation 1. A
// worker once told to drain never serves again, so those same pids ready now
// were never signalled.
func checkUntouched(t *testing.T, a *app, old []int) {
	t.Helper()
	select {
	case err := <-a.sup.done:
		a.sup.done <- err
		t.Fatalf("sockshim exited after the failed reload: %v", err)
	default:
	}
	// Workers of the failed deploy may still be on their way out.
	waitFor(t, 10*time.Second, "only ready workers left", func() bool {
		st := status(t, a.ctl)
		return len(workerPIDs(st, "ready")) == len(workerPIDs(st, ""))
	})
	st := status(t, a.ctl)
	if st.PID != a.sup.cmd.Process.Pid || st.State != "serving" || st.Generation != 1 {
		t.Errorf("status after the failed reload: pid %d, %s, generation %d; want pid %d, serving, generation 1",
			st.PID, st.State, st.Generation, a.sup.cmd.Process.Pid)
	}
	if got := readyPIDs(t, a); !slices.Equal(got, old) {
		t.Errorf("ready workers %v after the failed reload, want the same %v\nstatus: %s", got, old, st.Line)
	}
	for _, g := range st.Groups {
		for _, w := range g.Workers {
			if w.Generation != 1 {
				t.Errorf("%s[%d] (pid %d) runs generation %d after the failed reload, want 1", g.Name, w.ID, w.PID, w.Generation)
			}
		}
	}
	for range 10 {
		if got := get(t, a.url); got.version != "v1" || got.generation != "1" {
			t.Errorf("answer %+v after the failed reload, want v1 from generation 1", got)
		}
	}
}

// nofile returns a process's RLIMIT_NOFILE as prlimit takes it.
func nofile(t *testing.T, pid int) (soft, hard string) {
	t.Helper()
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(limits), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) >= 2 {
				return f[0], f[1]
			}
		}
	}
	t.Fatalf("no open files limit in /proc/%d/limits:\n%s", pid, limits)
	return "", ""
}
