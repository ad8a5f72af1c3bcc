package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/handoff/trampoline"
	"github.com/sockshim/sockshim/internal/procfs"
	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
	"golang.org/x/sys/unix"
)

// BenchmarkReport is the benchmark harness: one run measures everything
// BENCHMARKS.md reports, on one machine, under the same load client, and
// rewrites BENCHMARKS.md and its picture. Run it with
//
//	sudo go test ./e2e -run '^$' -bench Report -benchtime 1x -timeout 60m
//
// Figures are compared as ratios within the run; the machine is shared and
// noisy, so absolute numbers are for orientation only.
func BenchmarkReport(b *testing.B) {
	reloads := envInt("SOCKSHIM_BENCH_RELOADS", 100)
	bb := bins{
		sockshim:   testenv.Build(b, "github.com/sockshim/sockshim/cmd/sockshim"),
		testworker: testenv.Build(b, "github.com/sockshim/sockshim/testenv/testworker"),
	}
	m := testenv.StartUserManager(b)
	var r report
	began := time.Now()
	step := func(what string) { fmt.Fprintf(os.Stderr, "bench %6.1fs: %s\n", time.Since(began).Seconds(), what) }
	r.machine()

	// Steady state: the same worker, directly socket-activated vs under
	// sockshim; interleaved rounds so drift hits both alike.
	step("steady state")
	direct := plainUnit(b, m, bb, "bench-direct", "tracked")
	shimmed := installApp(b, m, bb, "bench-shim", workerConfig(bb, "v1", "rolling", 1, 1))
	shimmed.activate(b)
	var dRes, sRes []*load.Result
	const rounds = 5
	for range rounds {
		dRes = append(dRes, runLoad(b, direct, 16, 4*time.Second, false))
		sRes = append(sRes, runLoad(b, shimmed.url, 16, 4*time.Second, false))
	}
	dRate, dP99 := rateP99(dRes)
	sRate, sP99 := rateP99(sRes)
	r.add("## Steady state (16 new-connection clients, %d interleaved rounds of 4 s)\n\n", rounds)
	r.add("| path | requests/s | p99 latency |\n|---|---|---|\n")
	r.add("| worker socket-activated directly | %.0f | %s |\n| same worker under sockshim | %.0f | %s |\n", dRate, dP99, sRate, sP99)
	r.add("| **ratio sockshim / direct** | **%.2f** | **%.2f** |\n\n", sRate/dRate, float64(sP99)/float64(dP99))

	// Reloads under load, per strategy, then keep-alive POSTs, then the
	// machine's floor and the comparison restarts. Each case's steady p99 is
	// its own, measured on the same unit with the same load just before its
	// reloads: 4 workers serve with another tail than the 1 above.
	r.add("## %d reloads under load (16 clients, a new connection per request unless the case says keep-alive)\n\n", reloads)
	r.add("Each case's steady p99 is measured on the same unit, with the same load, just before its series (median of %d rounds of %s).\n\n", steadyRounds, steadyRound)
	r.add("| case | requests | failed | longest gap | p99 steady | p99 during reloads | ÷ steady | request → new generation serving p50 / p99 | request → old generation gone p50 / p99 |\n|---|---|---|---|---|---|---|---|---|\n")
	row := func(name string, res *load.Result, steady time.Duration, serving, gone string) {
		r.add("| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", name, res.Requests, failedCell(res), res.LongestGap.Round(time.Millisecond),
			steady, res.P99.Round(10*time.Microsecond), ratio(res.P99, steady), serving, gone)
	}
	var rolling struct {
		cycle  time.Duration // time per reload, which the floor series keep
		steady time.Duration
		ratio  string
	}
	var plotRes *load.Result
	var plotMarks []time.Duration
	for _, c := range []struct {
		strategy string
		surge    int  // parallel: 4 starts the whole generation at once (its default), 1 paces the starts
		post     bool // keep-alive POSTs, which the load client never retries
		clients  int
	}{{"rolling", 1, false, 16}, {"parallel", 4, false, 16}, {"parallel", 1, false, 16}, {"rolling", 1, true, 16}, {"rolling", 1, false, 4}} {
		label, unit, o := c.strategy, "bench-"+c.strategy, load.Options{Concurrency: c.clients}
		if c.strategy == "parallel" && c.surge == 1 {
			label, unit = "parallel, surge = 1 (starts paced)", unit+"-paced"
		}
		name := "sockshim " + label + ", 4 workers"
		if c.post {
			name, unit, o.KeepAlive, o.PostBytes = name+", keep-alive POSTs of 4 KiB", unit+"-post", true, 4096
		}
		if c.clients != 16 {
			name, unit = fmt.Sprintf("%s, %d clients (CPU not saturated)", name, c.clients), fmt.Sprintf("%s-%d", unit, c.clients)
		}
		step(name)
		a := installApp(b, m, bb, unit, workerConfig(bb, "v1", c.strategy, c.surge, 4))
		a.activate(b)
		o.URL = a.url
		steady := steadyP99(b, o)
		pid := status(b, a.ctl).PID
		cpu0, _ := procTimes(b, pid)
		sr := reloadSeries(b, m, a, unit, reloads, o)
		cpu1, _ := procTimes(b, pid)
		cpu := cpu1 - cpu0
		res := sr.res
		row(name, res, steady, fmt.Sprintf("%s / %s", pct(sr.serving, 50), pct(sr.serving, 99)), fmt.Sprintf("%s / %s", pct(sr.gone, 50), pct(sr.gone, 99)))
		if c.post || c.clients != 16 {
			continue
		}
		if c.strategy == "rolling" {
			rolling.cycle = (sr.marks[len(sr.marks)-1] - sr.marks[0]) / time.Duration(len(sr.marks)-1)
			rolling.steady, rolling.ratio = steady, ratio(res.P99, steady)
		}
		r.resources = append(r.resources, fmt.Sprintf("| %s | %d KiB | %s |", label, rssKiB(pid), (cpu/time.Duration(reloads)).Round(10*time.Microsecond)))
		r.stalls = append(r.stalls, stallSection("sockshim "+label, res, sr.spans, parseLog(m.Log()), 3*steady, sr.pressure, sr.clientWait))
		if plotRes == nil {
			plotRes, plotMarks = res, sr.marks
		}
	}
	step("sockshim rolling, load client in its own process")
	ext := externalClientSeries(b, m, bb, "bench-rolling-ext", reloads)
	row("sockshim rolling, 4 workers, load client in a process of its own (steady: the rolling case's)", ext, rolling.steady, "-", "-")
	var floor []string
	for _, f := range []struct {
		name  string
		round func() floorRound
	}{
		{"no sockshim: 4 workers the harness started, `systemctl reload` of a unit whose `ExecReload=` is /bin/true, paced like the rolling reloads",
			func() floorRound { return noopReload(b, m, bb, "bench-floor", false) }},
		{"no sockshim: the same, and after each reload request the harness replaces the 4 workers one at a time (start, READY=1, SIGTERM to the old one)",
			func() floorRound { return noopReload(b, m, bb, "bench-floor-replace", true) }},
		{"the same 4 workers the harness started, and beside them sockshim's rolling reloads of a second app whose 4 workers serve nothing",
			func() floorRound { return idleSockshimReload(b, m, bb, "bench-floor-beside") }},
	} {
		step("floor: " + f.name)
		res, steady := floorSeries(b, m, bb, fmt.Sprintf("bench-floor-home%d", len(floor)), reloads, rolling.cycle, f.round())
		floor = append(floor, ratio(res.P99, steady))
		row(f.name, res, steady, "-", "-")
	}
	for _, drain := range []string{"tracked", "shutdown"} {
		step("restarts without sockshim, drain=" + drain)
		url := plainUnit(b, m, bb, "bench-plain-"+drain, drain)
		steady := steadyP99(b, load.Options{URL: url, Concurrency: 16})
		res, lat := restartSeries(b, m, url, "bench-plain-"+drain, reloads)
		row("`systemctl restart` without sockshim, worker drain="+drain, res, steady, fmt.Sprintf("%s / %s", pct(lat, 50), pct(lat, 99)), "-")
	}
	r.add("\ndrain=tracked is examples/gracefulhttp; drain=shutdown is `http.Server.Shutdown` alone (see README).\n\n")
	r.add("## Where the gaps come from\n\nEach gap (a time in which no request was answered) placed on its reload's timeline: the step sockshim had last logged, counted from `systemctl reload` being run.\n\n%s", strings.Join(r.stalls, ""))
	r.add("%s\n\n", stallCause)
	r.add("**What the machine itself costs.** Paced like the rolling reloads (one every %s), `systemctl reload` with nothing to do raised the p99 to %s of steady; replacing the 4 serving workers after each request, without sockshim, to %s; sockshim's rolling reloads of a second app whose workers serve nothing, beside the same serving workers, to %s. sockshim's rolling reloads of the workers that serve: %s. The first two are what any reload that replaces 4 serving processes costs on this machine; the third is sockshim's whole reload (its CPU time, the trampolines, the `sockshim reload` process, the new workers' start and the old ones' exit) minus the replacement of the workers that serve.\n\n",
		rolling.cycle.Round(time.Millisecond), floor[0], floor[1], floor[2], rolling.ratio)

	r.add("## sockshim's own cost\n\n| strategy | RSS after %d reloads | CPU time per reload |\n|---|---|---|\n%s\n\n", reloads, strings.Join(r.resources, "\n"))
	step("where a reload's CPU time goes")
	r.add("%s", reloadCPUReport(b, m, bb, reloads, rolling.cycle))
	step("exec costs")
	r.add("%s\n", execCosts(b, bb, 300))

	step("scale")
	start, reload := scale(b, bb, 1000, 64)
	r.add("## Scale: 1,000 passed sockets, 64 workers per generation\n\n| step | time |\n|---|---|\n| start → READY=1 | %s |\n| reload (rolling, surge 8) | %s |\n\n", start, reload)

	step("faults")
	kills, leaks := killSeries(b, 200), reloadLeaks(b, 1000)
	r.add("## Faults (e2e/faults_test.go at full counts)\n\n| fault | what happened |\n|---|---|\n| SIGKILL of a worker at a random moment, 3 workers, 8 new-connection clients | %s |\n| reloads in a row, then a storm | %s |\n\n", kills, leaks)

	step("promote_after")
	r.add("%s\n", promoteReport(b, bb, m))

	step("long-lived connections")
	r.add("%s\n", gatewayReport(b, bb, m))

	step("servers that bind their own port")
	r.add("%s", serversReport(b, bb, m))

	svg := plot(plotRes, plotMarks)
	if err := os.WriteFile("../results/reload-latency.svg", []byte(svg), 0o644); err != nil {
		b.Fatal(err)
	}
	r.add(latencyHeading + "\n\nThe rolling reloads above (4 workers, 16 clients): median and slowest answer per 100 ms, log scale; reload requests in orange; failed requests would show as red marks along the top.\n\n![latency over time](results/reload-latency.svg)\n")
	if err := os.WriteFile("../BENCHMARKS.md", []byte(r.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote BENCHMARKS.md:\n%s", r.String())
}

type report struct {
	sb        strings.Builder
	resources []string
	stalls    []string
}

func (r *report) add(format string, args ...any) { fmt.Fprintf(&r.sb, format, args...) }
func (r *report) String() string                 { return r.sb.String() }

func (r *report) machine() {
	cmd := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).Output()
		return strings.TrimSpace(strings.Split(string(out), "\n")[0])
	}
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	r.add("# sockshim benchmarks\n\nWritten by `go test ./e2e -run '^$' -bench Report -benchtime 1x` on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	r.add("| machine | |\n|---|---|\n| CPU | %s, %d cores |\n| kernel | %s |\n| Go | %s |\n| systemd | %s |\n| load client | testenv/load, in the benchmark process |\n| race detector | %v |\n\n",
		model, runtime.NumCPU(), cmd("uname", "-r"), runtime.Version(), cmd("systemctl", "--version"), testenv.RaceEnabled)
}

// plainUnit installs the testworker socket-activated without sockshim.
func plainUnit(tb testing.TB, m *testenv.Manager, bb bins, name, drain string) string {
	port := testenv.FreePort(tb)
	m.WriteUnit(tb, name+".socket", fmt.Sprintf("[Socket]\nListenStream=127.0.0.1:%d\nBacklog=4096\n", port))
	m.WriteUnit(tb, name+".service", fmt.Sprintf("[Unit]\nRequires=%s.socket\nStartLimitIntervalSec=0\n[Service]\nType=notify\nExecStart=%s -version plain -drain %s\nTimeoutStopSec=30\n", name, bb.testworker, drain))
	m.MustSystemctl(tb, "start", name+".socket")
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	get(tb, url)
	m.WaitActive(tb, name+".service", 10*time.Second)
	return url
}

func runLoad(tb testing.TB, url string, conc int, d time.Duration, keepAlive bool) *load.Result {
	res, err := load.Run(context.Background(), load.Options{URL: url, Concurrency: conc, Duration: d, KeepAlive: keepAlive})
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// failedCell is the failed count, with the kinds when there are any.
func failedCell(res *load.Result) string {
	if res.Failed() == 0 {
		return "0"
	}
	var kinds []string
	for k, n := range res.Failures {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(kinds)
	return fmt.Sprintf("%d (%s)", res.Failed(), strings.Join(kinds, ", "))
}

func rateP99(rs []*load.Result) (float64, time.Duration) {
	var n int
	var el time.Duration
	var p99s []time.Duration
	for _, r := range rs {
		n += r.Requests
		el += r.Elapsed
		p99s = append(p99s, r.P99)
	}
	slices.Sort(p99s)
	return float64(n) / el.Seconds(), p99s[len(p99s)/2].Round(10 * time.Microsecond)
}

const (
	steadyRounds = 3
	steadyRound  = 4 * time.Second
)

// steadyP99 is the median p99 of steadyRounds rounds of load o without
// reloads.
func steadyP99(tb testing.TB, o load.Options) time.Duration {
	var rs []*load.Result
	for range steadyRounds {
		o.Duration = steadyRound
		res, err := load.Run(context.Background(), o)
		if err != nil {
			tb.Fatal(err)
		}
		rs = append(rs, res)
	}
	_, p99 := rateP99(rs)
	return p99
}

// ratio is p99 as a multiple of steady.
func ratio(p99, steady time.Duration) string {
	return fmt.Sprintf("%.2f×", float64(p99)/float64(steady))
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(time.Millisecond)
}

// reloadSeries does n reloads under load o (its URL and samples are set
// here) and returns the load result, the time of each reload until the new
// generation served (systemctl reload returning) and until the old one was
// gone, and the reload moments.
// series is what a reload series measured.
type series struct {
	res           *load.Result
	serving, gone []time.Duration // per reload: until `systemctl reload` returned; until the old generation exited
	marks         []time.Duration // reload requests, since the series began
	spans         []reloadSpan
	pressure      float64 // share of the time some task waited for a CPU
	clientWait    float64 // the load client's threads' wait for a CPU, summed, per second
}

func reloadSeries(tb testing.TB, m *testenv.Manager, a *app, unit string, n int, o load.Options) *series {
	var sr series
	began := time.Now()
	o.URL, o.RecordSamples = a.url, true
	// The old generation is sockshim's children before the reload; their
	// exits are watched through pidfds, so that measuring costs sockshim
	// nothing (polling its control socket would).
	sup := status(tb, a.ctl).PID
	psi0, wait0 := cpuPressure(), runDelay(os.Getpid())
	sr.res = underLoad(tb, o, func() {
		for range n {
			sp := reloadAndWait(tb, m, unit, sup)
			sr.marks = append(sr.marks, sp.requested.Sub(began))
			sr.serving = append(sr.serving, sp.returned.Sub(sp.requested))
			sr.gone = append(sr.gone, sp.gone.Sub(sp.requested))
			sr.spans = append(sr.spans, sp)
		}
	})
	elapsed := time.Since(began)
	sr.pressure = float64(cpuPressure()-psi0) / float64(elapsed)
	sr.clientWait = float64(runDelay(os.Getpid())-wait0) / float64(elapsed)
	return &sr
}

// reloadAndWait runs `systemctl reload` of unit and waits until every
// process sockshim (pid sup) had before it, the old generation, has exited.
func reloadAndWait(tb testing.TB, m *testenv.Manager, unit string, sup int) reloadSpan {
	old, err := procfs.Children(sup)
	if err != nil {
		tb.Fatalf("children of sockshim (pid %d): %v", sup, err)
	}
	sp := reloadSpan{requested: time.Now()}
	m.MustSystemctl(tb, "reload", unit+".service")
	sp.returned = time.Now()
	awaitExit(tb, old)
	sp.gone = time.Now()
	return sp
}

// awaitExit waits until every process of pids has exited, through pidfds
// (no polling); a pid already gone counts as exited.
func awaitExit(tb testing.TB, pids []int) {
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil {
			tb.Fatalf("pidfd_open %d: %v", pid, err)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err = unix.Poll(fds, 60_000); !errors.Is(err, unix.EINTR) {
				break
			}
		}
		unix.Close(fd)
		if err != nil || fds[0].Revents&unix.POLLIN == 0 {
			tb.Fatalf("waiting for pid %d to exit: %v (revents %#x)", pid, err, fds[0].Revents)
		}
	}
}

func restartSeries(tb testing.TB, m *testenv.Manager, url, unit string, n int) (*load.Result, []time.Duration) {
	var lat []time.Duration
	res := underLoad(tb, load.Options{URL: url, Concurrency: 16}, func() {
		for range n {
			start := time.Now()
			m.MustSystemctl(tb, "restart", unit+".service")
			lat = append(lat, time.Since(start))
		}
	})
	return res, lat
}

func rssKiB(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

// execCosts times, n times each and interleaved so drift hits all alike,
// what starting a process costs on this machine and what sockshim adds: a
// worker start is the trampoline's start, a recvmsg and the worker's exec.
// A trampoline's own share is its run, from fork to the exit of the
// /bin/true it execs, minus /bin/true's direct start; the socket pair is
// made before the clock starts (the supervisor's work, not the
// trampoline's), the sockets are sent within it.
func execCosts(tb testing.TB, bb bins, n int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	minimal := testenv.Build(tb, "github.com/sockshim/sockshim/testenv/minimalgo")
	minimalExec := testenv.Build(tb, "github.com/sockshim/sockshim/testenv/minimalexec")
	handoffBin := filepath.Join(filepath.Dir(bb.sockshim), handoff.BinaryName)
	run := func(cmd *exec.Cmd) time.Duration {
		start := time.Now()
		if err := cmd.Run(); err != nil {
			tb.Fatalf("%s: %v", cmd, err)
		}
		return time.Since(start)
	}
	through := func(trampoline string) time.Duration {
		parent, child, err := handoff.Pair()
		if err != nil {
			tb.Fatal(err)
		}
		start := time.Now()
		args, env := handoff.TrampolineArgs([]string{"/bin/true"}, os.Environ()) // as sockshim starts it
		cmd := exec.Command(trampoline, args...)
		cmd.Env = env
		cmd.ExtraFiles = []*os.File{child}
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		child.Close()
		if err := handoff.Send(parent, 0, []handoff.Socket{{Name: "http", File: f}}); err != nil {
			tb.Fatal(err)
		}
		parent.Close()
		if err := cmd.Wait(); err != nil {
			tb.Fatalf("%s: %v", cmd, err)
		}
		return time.Since(start)
	}
	rows := []struct {
		what string
		time func() time.Duration
		d    []time.Duration
	}{
		{what: "`/bin/true`", time: func() time.Duration { return run(exec.Command("/bin/true")) }},
		{what: "a minimal Go program (`func main() {}`)", time: func() time.Duration { return run(exec.Command(minimal)) }},
		{what: "`sockshim version`", time: func() time.Duration { return run(exec.Command(bb.sockshim, "version")) }},
		{what: "`/bin/true` through a Go program that only execs it (testenv/minimalexec), with one P like the trampoline", time: func() time.Duration {
			cmd := exec.Command(minimalExec, "/bin/true")
			cmd.Env = append(slices.Clone(trampoline.OwnEnv), os.Environ()...)
			return run(cmd)
		}},
		{what: "`/bin/true` through " + handoff.BinaryName + ", 1 socket handed over", time: func() time.Duration { return through(handoffBin) }},
		{what: "`/bin/true` through sockshim's own binary as trampoline, 1 socket", time: func() time.Duration { return through(bb.sockshim) }},
	}
	for range n {
		for i := range rows {
			rows[i].d = append(rows[i].d, rows[i].time())
		}
	}
	med := make([]time.Duration, len(rows))
	for i := range rows {
		slices.Sort(rows[i].d)
		med[i] = rows[i].d[n/2]
	}
	round := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	var sb strings.Builder
	fmt.Fprintf(&sb, "## Exec costs (median of %d, interleaved)\n\n| start and exit of | median | ratio to `/bin/true` |\n|---|---|---|\n", n)
	for i, r := range rows {
		fmt.Fprintf(&sb, "| %s | %s | %.2f |\n", r.what, round(med[i]), float64(med[i])/float64(med[0]))
	}
	share := func(i int) time.Duration { return med[i] - med[0] }
	fmt.Fprintf(&sb, "\n| what a trampoline adds to a worker's own exec | time | ratio to the minimal Go program |\n|---|---|---|\n")
	fmt.Fprintf(&sb, "| a Go program that only execs (the floor for a trampoline in Go) | %s | %.2f |\n", round(share(3)), float64(share(3))/float64(med[1]))
	fmt.Fprintf(&sb, "| **%s** | %s | **%.2f** |\n", handoff.BinaryName, round(share(4)), float64(share(4))/float64(med[1]))
	fmt.Fprintf(&sb, "| sockshim's own binary (before %s; still the fallback when it is not installed) | %s | %.2f |\n", handoff.BinaryName, round(share(5)), float64(share(5))/float64(med[1]))
	return sb.String()
}

// scale starts a standalone sockshim with sockets [[listen]] entries and
// workers testworkers, and times the start and one reload.
func scale(tb testing.TB, bb bins, sockets, workers int) (time.Duration, time.Duration) {
	dir, err := os.MkdirTemp("", "sockshim-scale-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var sb strings.Builder
	for i := range sockets {
		fmt.Fprintf(&sb, "[[listen]]\nname = \"s%d\"\naddress = \"tcp://127.0.0.1:0\"\n", i)
	}
	ctl := filepath.Join(dir, "control.sock")
	fmt.Fprintf(&sb, "[[worker]]\nname = \"tw\"\ncommand = %s\ncount = %d\nsurge = 8\nready_timeout = \"60s\"\n[control]\nsocket = %q\n",
		tomlList(bb.testworker), workers, ctl)
	cfg := filepath.Join(dir, "scale.toml")
	os.WriteFile(cfg, []byte(sb.String()), 0o644)

	up := newUpstream(tb)
	cmd := exec.Command(bb.sockshim, "run", "-c", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+up.path)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	up.await(tb, "READY=1", 5*time.Minute)
	started := time.Since(start)
	start = time.Now()
	if out, err := exec.Command(bb.sockshim, "reload", "-c", cfg).CombinedOutput(); err != nil {
		tb.Fatalf("scale reload: %v\n%s", err, out)
	}
	return started.Round(time.Millisecond), time.Since(start).Round(time.Millisecond)
}

// plot draws request latency over time as an SVG: per 100 ms of the run,
// the median and the slowest answer (log scale), failures as red marks at
// the top, and the reload requests as vertical lines.
func plot(res *load.Result, marks []time.Duration) string {
	const w, h, left, bottom = 1000.0, 360.0, 60.0, 40.0
	const bucket = 100 * time.Millisecond
	var end time.Duration
	for _, s := range res.Samples {
		end = max(end, s.Start+s.Latency)
	}
	end = max(end, time.Second)
	x := func(d time.Duration) float64 { return left + (w-left-10)*float64(d)/float64(end) }
	// log scale from 0.1 ms to 1 s
	y := func(d time.Duration) float64 {
		ms := max(float64(d)/1e6, 0.1)
		frac := (math.Log(ms) - math.Log(0.1)) / (math.Log(1000) - math.Log(0.1))
		return (h - bottom) - (h-bottom-10)*min(frac, 1)
	}
	lat := make([][]time.Duration, end/bucket+1)
	fails := make([]int, len(lat))
	for _, s := range res.Samples {
		i := s.Start / bucket
		if s.OK {
			lat[i] = append(lat[i], s.Latency)
		} else {
			fails[i]++
		}
	}
	line := func(p int) string {
		var pts []string
		for i, l := range lat {
			if len(l) > 0 {
				slices.Sort(l)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(time.Duration(i)*bucket+bucket/2), y(l[min(len(l)-1, len(l)*p/100)])))
			}
		}
		return strings.Join(pts, " ")
	}

	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", w, h)
	sb.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	for _, ms := range []float64{0.1, 1, 10, 100, 1000} {
		yy := y(time.Duration(ms * 1e6))
		fmt.Fprintf(&sb, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="5" y="%.1f">%g ms</text>`+"\n", left, w-10, yy, yy, yy+4, ms)
	}
	for _, mk := range marks {
		fmt.Fprintf(&sb, `<line x1="%.1f" x2="%.1f" y1="10" y2="%.0f" stroke="#f90" stroke-width="0.7"/>`+"\n", x(mk), x(mk), h-bottom)
	}
	fmt.Fprintf(&sb, `<polyline fill="none" stroke="#c33" stroke-width="1" points="%s"/>`+"\n", line(100))
	fmt.Fprintf(&sb, `<polyline fill="none" stroke="#27a" stroke-width="1.5" points="%s"/>`+"\n", line(50))
	for i, n := range fails {
		if n > 0 {
			fmt.Fprintf(&sb, `<rect x="%.1f" y="4" width="3" height="6" fill="#d00"><title>%d failed</title></rect>`+"\n", x(time.Duration(i)*bucket), n)
		}
	}
	step := max(1, int(end/time.Second)/10)
	for sec := 0; time.Duration(sec)*time.Second <= end; sec += step {
		xx := x(time.Duration(sec) * time.Second)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.0f">%ds</text>`+"\n", xx-5, h-bottom+15, sec)
	}
	fmt.Fprintf(&sb, `<text x="%.0f" y="%.0f">time since the load began; blue: median, red: slowest answer per 100 ms; orange: reload requested; red marks on top: failed requests</text>`+"\n", left, h-8)
	sb.WriteString("</svg>\n")
	return sb.String()
}
