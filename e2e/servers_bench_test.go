package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/internal/procfs"
	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// This file measures issue 20's claims for BenchmarkReport: what
// intercept_bind costs a served request, and how servers that bind their
// own port reload under sockshim against their own reload (pm2's, nginx's),
// with the same program, the same load and, for a broken deploy, the same
// broken file. Every comparison runs in the one benchmark process, one
// after the other, and is read as a ratio within the run.

// serversHeading starts the section serversReport writes; BenchmarkServers
// replaces the section of that name in BENCHMARKS.md.
const serversHeading = "## Servers that bind their own port"

// latencyHeading starts BenchmarkReport's last section.
const latencyHeading = "## Latency over time"

// BenchmarkServers is the "Servers that bind their own port" section of
// BenchmarkReport alone (a few minutes instead of the whole run); it
// replaces that section of BENCHMARKS.md and prints it:
//
//	sudo go test ./e2e -run '^$' -bench Servers -benchtime 1x -timeout 30m
//
// SOCKSHIM_BENCH_SERVER_RELOADS sets the reloads per server (default 5),
// SOCKSHIM_BENCH_INTERCEPT_ROUNDS the rounds per arm of the intercept cost
// (default 12). It installs pm2 with npm, from the npm registry.
func BenchmarkServers(b *testing.B) {
	bb := build(b)
	m := testenv.StartUserManager(b)
	for b.Loop() {
		section := serversReport(b, bb, m)
		fmt.Print(section)
		if err := spliceSection("../BENCHMARKS.md", serversHeading, section); err != nil {
			b.Fatal(err)
		}
	}
}

// spliceSection replaces the section of path that starts with heading (up
// to the next "## " heading) with section, or inserts section before the
// latency picture's section when there is none yet, where BenchmarkReport
// writes it.
func spliceSection(path, heading, section string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("splicing %q into %s: %w", heading, path, err)
	}
	start := bytes.Index(doc, []byte("\n"+heading+"\n"))
	var end int
	if start >= 0 {
		start++
		end = len(doc)
		if next := bytes.Index(doc[start+len(heading):], []byte("\n## ")); next >= 0 {
			end = start + len(heading) + next + 1
		}
	} else {
		start = bytes.Index(doc, []byte("\n"+latencyHeading+"\n"))
		if start < 0 {
			return fmt.Errorf("splicing %q into %s: neither it nor %q is there", heading, path, latencyHeading)
		}
		start++
		end = start
	}
	out := append(append(append([]byte{}, doc[:start]...), section...), doc[end:]...)
	return os.WriteFile(path, out, 0o644)
}

// serversReport returns the section: the cost of intercept_bind, then each
// server under its own reload and under sockshim's.
func serversReport(b *testing.B, bb bins, m *testenv.Manager) string {
	var s strings.Builder
	fmt.Fprintf(&s, "%s\n\n", serversHeading)
	fmt.Fprintf(&s, "`intercept_bind = true` (README, \"Servers that bind their own port\"), measured by `e2e/servers_bench_test.go` "+
		"(`-bench Servers` runs this section alone and rewrites it here; this one: %s). "+
		"All load is 16 clients opening a new connection per request, on loopback, in the benchmark process.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"))
	s.WriteString(interceptCost(b, bb, m))
	s.WriteString(nodeComparison(b, bb, m))
	s.WriteString(nginxComparison(b, bb, m))
	return s.String()
}

// interceptArm is one way of running the testworker in interceptCost.
type interceptArm struct {
	what    string
	a       *app
	url     string // where the load goes
	workers []int
	res     []*load.Result
	cpu     time.Duration // the workers' CPU time over all rounds
}

// interceptCost runs the same testworker under the same load in four
// sockshim apps. Two pairs, each differing in one thing only: 2 workers
// that take the held socket by LISTEN_FDS, or by their own net.Listen
// (-bind) of the held address, which intercept_bind answers with the held
// socket; and 1 worker that binds a port sockshim does not hold, with the
// filter installed (intercept_bind, the bind proceeds as asked) or
// without. Rounds rotate through the four, so drift hits all alike.
func interceptCost(b *testing.B, bb bins, m *testenv.Manager) string {
	rounds, round := envInt("SOCKSHIM_BENCH_INTERCEPT_ROUNDS", 12), 2*time.Second
	held := func(unit string, intercept bool) *app {
		a := installApp(b, m, bb, unit, "")
		// The -bind address is the app's port, which installApp picks;
		// sockshim reads its config only when the first connection
		// starts it.
		cfg := workerConfig(bb, "v1", "rolling", 1, 2)
		if intercept {
			cfg = workerConfig(bb, "v1", "rolling", 1, 2, "-bind", fmt.Sprintf("127.0.0.1:%d", a.port)) + "intercept_bind = true\n"
		}
		a.rewrite(b, cfg)
		a.activate(b)
		return a
	}
	// own binds a port of its own: no connection reaches the held socket,
	// so the service is started, not socket-activated.
	own := func(unit string, intercept bool) (*app, string) {
		port := testenv.FreePort(b)
		a := installApp(b, m, bb, unit, "")
		cfg := workerConfig(bb, "v1", "rolling", 1, 1, "-bind", fmt.Sprintf("127.0.0.1:%d", port))
		if intercept {
			cfg += "intercept_bind = true\n"
		}
		a.rewrite(b, cfg)
		m.MustSystemctl(b, "start", unit+".service")
		url := fmt.Sprintf("http://127.0.0.1:%d/", port)
		waitFor(b, a.upWithin(b), unit+" to answer", func() bool { return strings.HasPrefix(probe(url), "200,") })
		return a, url
	}
	arms := []*interceptArm{
		{what: "2 workers, the held socket by `LISTEN_FDS`", a: held("bench-fds", false)},
		{what: "2 workers, the held socket by their own `bind(2)`, intercept_bind", a: held("bench-bind", true)},
		{what: "1 worker, its own socket on a port sockshim does not hold, no filter"},
		{what: "1 worker, the same, with intercept_bind's filter (its bind matches nothing and proceeds)"},
	}
	arms[2].a, arms[2].url = own("bench-own", false)
	arms[3].a, arms[3].url = own("bench-own-filter", true)
	for _, arm := range arms[:2] {
		arm.url = arm.a.url
	}
	for _, arm := range arms {
		arm.workers = children(status(b, arm.a.ctl).PID)
	}
	// restart gives an arm new processes: a ratio of the same few
	// processes all along would rest on where the scheduler happened to
	// place them. (A reload would not do for the arms on a port of their
	// own: the new worker's bind would find the old one's socket.)
	restart := func(arm *interceptArm) {
		m.MustSystemctl(b, "restart", arm.a.name+".service")
		waitFor(b, arm.a.upWithin(b), arm.a.name+" to answer", func() bool { return strings.HasPrefix(probe(arm.url), "200,") })
		arm.workers = children(status(b, arm.a.ctl).PID)
	}
	pairs := [][2]*interceptArm{{arms[0], arms[1]}, {arms[2], arms[3]}}
	ratios := make([][]float64, len(pairs))
	for i := range rounds {
		// Restarts come after every len(arms) rounds: each set of
		// processes sees every order of the rotation once.
		if i > 0 && i%len(arms) == 0 {
			for _, arm := range arms {
				restart(arm)
			}
		}
		got := map[*interceptArm]*load.Result{}
		for k := range arms {
			arm := arms[(i+k)%len(arms)]
			before := cpuOf(b, arm.workers)
			res := runLoad(b, arm.url, 16, round, false)
			arm.cpu += cpuOf(b, arm.workers) - before
			if res.Failed() != 0 {
				b.Errorf("intercept cost, %s: %d failed requests without any reload: %v %v", arm.what, res.Failed(), res.Failures, res.Examples)
			}
			arm.res = append(arm.res, res)
			got[arm] = res
		}
		for p, pair := range pairs {
			ratios[p] = append(ratios[p], rate(got[pair[1]])/rate(got[pair[0]]))
		}
	}
	mib := func(path string) float64 {
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		return float64(fi.Size()) / (1 << 20)
	}
	var s strings.Builder
	fmt.Fprintf(&s, "### What intercept_bind costs a request\n\n"+
		"The testworker under sockshim in four apps, %d rounds of %s through each, the order rotating, the four services restarted "+
		"after every %d rounds so that no ratio rests on one set of processes. The filter sends only `bind` and `listen` to "+
		"sockshim; it allows every other call of the worker, each request's included, at once. Requests per second "+
		"are the rounds' requests over their time; p99 is the median of the rounds'; the workers' CPU time (`/proc/PID/stat`, "+
		"all threads) is summed over the rounds and divided by their requests, which depends less on what else the machine "+
		"runs than the rate does.\n\n", rounds, round, len(arms))
	s.WriteString("| worker | requests/s | p99 latency | workers' CPU time per request | sockshim RSS |\n|---|---|---|---|---|\n")
	figures := func(arm *interceptArm) (float64, time.Duration, time.Duration) {
		r, p99 := rateP99(arm.res)
		n := 0
		for _, res := range arm.res {
			n += res.Requests
		}
		return r, p99, arm.cpu / time.Duration(n)
	}
	for p, pair := range pairs {
		var f [2]struct {
			rate     float64
			p99, cpu time.Duration
		}
		for k, arm := range pair {
			f[k].rate, f[k].p99, f[k].cpu = figures(arm)
			fmt.Fprintf(&s, "| %s | %.0f | %s | %s | %d KiB |\n", arm.what, f[k].rate, f[k].p99, f[k].cpu.Round(100*time.Nanosecond), rssKiB(status(b, arm.a.ctl).PID))
		}
		rs := slices.Sorted(slices.Values(ratios[p]))
		fmt.Fprintf(&s, "| **ratio** (each round's: median %.3f, range %.3f to %.3f) | **%.3f** | **%.2f** | **%.3f** | |\n",
			rs[len(rs)/2], rs[0], rs[len(rs)-1], f[1].rate/f[0].rate, float64(f[1].p99)/float64(f[0].p99), float64(f[1].cpu)/float64(f[0].cpu))
	}
	fmt.Fprintf(&s, "\nBinaries as the harness builds them (static, not stripped): sockshim %.1f MiB, %s (the trampoline, which installs the filter) %.1f MiB.\n\n",
		mib(bb.sockshim), handoff.BinaryName, mib(filepath.Join(filepath.Dir(bb.sockshim), handoff.BinaryName)))
	for _, arm := range arms {
		m.MustSystemctl(b, "stop", arm.a.name+".service", arm.a.name+".socket")
	}
	return s.String()
}

// cpuOf is the CPU time the processes pids have spent, their threads'
// together.
func cpuOf(tb testing.TB, pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		own, _ := procTimes(tb, pid)
		sum += own
	}
	return sum
}

// rate is a run's requests per second.
func rate(r *load.Result) float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// serverReloadCount is how many reloads each server gets under load in
// the comparison (the figures are of 5).
func serverReloadCount() int { return envInt("SOCKSHIM_BENCH_SERVER_RELOADS", 5) }

// brokenWait is how long after a broken deploy's reload returned the
// comparison asks whether anything answers.
const brokenWait = 3 * time.Second

// reloader is one server under one way of reloading it. Every server runs
// as a service of the same user manager, so that each competes with the
// load client from a CPU cgroup of its own, as sockshim's workers do.
type reloader struct {
	name   string
	url    string
	deploy func(i int)            // puts release i on disk (i ≥ 2) before its reload
	reload func() (string, error) // the reload command: pm2 reload, nginx -s reload, systemctl reload
	old    func() []int           // the processes a reload replaces, read as it begins
	state  func() string          // what the server's manager says of it, for the broken deploy
	ours   bool                   // sockshim's: its failures are errors, not findings
}

// reloadFigures is what n reloads under load measured.
type reloadFigures struct {
	name           string
	steadyRate     float64
	steady         time.Duration
	res            *load.Result
	returned, gone []time.Duration // per reload: until the command returned; until the old processes exited
	refused        int             // reload commands that exited non-zero
}

// compareReloads measures every server's steady state in interleaved
// rounds, then gives each, one after the other, n reloads in a row under
// load, each a new release: the command, then a wait until every process
// it replaced has exited.
func compareReloads(b *testing.B, rs []reloader, n int) []reloadFigures {
	steady := make([][]*load.Result, len(rs))
	for range steadyRounds {
		for i, r := range rs {
			steady[i] = append(steady[i], runLoad(b, r.url, 16, steadyRound, false))
		}
	}
	var out []reloadFigures
	for i, r := range rs {
		f := reloadFigures{name: r.name}
		f.steadyRate, f.steady = rateP99(steady[i])
		f.res = underLoad(b, load.Options{URL: r.url, Concurrency: 16}, func() {
			for rel := 2; rel <= n+1; rel++ {
				r.deploy(rel)
				old := r.old()
				start := time.Now()
				if out, err := r.reload(); err != nil {
					f.refused++
					b.Logf("%s: reload to release %d: %v\n%s", r.name, rel, err, out)
				}
				f.returned = append(f.returned, time.Since(start))
				awaitExit(b, old)
				f.gone = append(f.gone, time.Since(start))
			}
		})
		if r.ours && (f.res.Failed() != 0 || f.refused != 0) {
			b.Errorf("%s: %d reloads refused, %d failed requests: %v %v", r.name, f.refused, f.res.Failed(), f.res.Failures, f.res.Examples)
		}
		out = append(out, f)
	}
	return out
}

// brokenFigures is what a broken deploy did.
type brokenFigures struct {
	name   string
	exit   string        // the reload command's exit status
	took   time.Duration // until it returned
	res    *load.Result  // the load from before the reload to brokenWait after it
	answer string        // a request brokenWait after the reload returned
	state  string        // the server's manager's view then
}

// brokenDeploy puts a release that cannot start on disk (breakIt), runs
// the reload under load and asks, brokenWait after it returned, whether
// anything answers.
func brokenDeploy(b *testing.B, r reloader, breakIt func()) brokenFigures {
	f := brokenFigures{name: r.name}
	breakIt()
	f.res = underLoad(b, load.Options{URL: r.url, Concurrency: 16}, func() {
		start := time.Now()
		out, err := r.reload()
		f.took = time.Since(start)
		f.exit = exitStatus(err)
		b.Logf("%s: broken deploy: reload exit %s after %s\n%s", r.name, f.exit, f.took.Round(time.Millisecond), out)
		time.Sleep(brokenWait)
		f.answer = probe(r.url)
		f.state = r.state()
	})
	return f
}

// exitStatus is a command's exit status as the report shows it.
func exitStatus(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "0"
	case errors.As(err, &ee):
		return strconv.Itoa(ee.ExitCode())
	}
	return err.Error()
}

// probe sends one request on a new connection and says what came back.
func probe(url string) string {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "nothing (" + load.Classify(err) + ")"
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return fmt.Sprintf("%d, release %s, pid %s", resp.StatusCode, resp.Header.Get("X-Version"), resp.Header.Get("X-Pid"))
}

// comparisonTables writes the reload table and the broken-deploy table.
func comparisonTables(s *strings.Builder, n int, rows []reloadFigures, broken []brokenFigures) {
	fmt.Fprintf(s, "| case | requests/s steady | p99 steady | reloads | requests (per s) | failed | longest gap | p99 during reloads | reload command returned p50 / max | → replaced processes exited p50 / max |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range rows {
		reloads := strconv.Itoa(n)
		if f.refused > 0 {
			reloads = fmt.Sprintf("%d (%d refused)", n, f.refused)
		}
		fmt.Fprintf(s, "| %s | %.0f | %s | %s | %d (%.0f) | %s | %s | %s | %s / %s | %s / %s |\n", f.name, f.steadyRate, f.steady, reloads,
			f.res.Requests, rate(f.res), failedCell(f.res), f.res.LongestGap.Round(time.Millisecond), f.res.P99.Round(10*time.Microsecond),
			pct(f.returned, 50), pct(f.returned, 100), pct(f.gone, 50), pct(f.gone, 100))
	}
	fmt.Fprintf(s, "\n| broken deploy: reload of a release that cannot start | reload command's exit status | returned after | requests from the reload to %s after | failed | a request %s after the reload returned | then |\n|---|---|---|---|---|---|---|\n", brokenWait, brokenWait)
	for _, f := range broken {
		fmt.Fprintf(s, "| %s | %s | %s | %d | %s | %s | %s |\n", f.name, f.exit, f.took.Round(time.Millisecond), f.res.Requests, failedCell(f.res), f.answer, f.state)
	}
	s.WriteString("\n")
}

// sockshimReloader reloads app a (unit a.name) with `systemctl reload`;
// the processes a reload replaces are sockshim's children.
func sockshimReloader(b *testing.B, m *testenv.Manager, a *app, name string, deploy func(i int)) reloader {
	sup := status(b, a.ctl).PID
	return reloader{
		name: name, url: a.url, deploy: deploy, ours: true,
		reload: func() (string, error) { return m.Systemctl("reload", a.name+".service") },
		old:    func() []int { return children(sup) },
		state:  func() string { return "sockshim status: " + status(b, a.ctl).Line },
	}
}

// checkRefused asserts that sockshim refused a broken deploy: the reload
// failed, the generation before it serves, and no request failed.
func checkRefused(b *testing.B, a *app, gen int, f brokenFigures) {
	if now := status(b, a.ctl).Generation; f.exit == "0" || now != gen || f.res.Failed() != 0 || !strings.HasPrefix(f.answer, "200,") {
		b.Errorf("%s: broken deploy: reload exit %s, generation %d (was %d), %s, then %s; want the reload refused and generation %d serving, no failed request",
			f.name, f.exit, now, gen, f.res, f.answer, gen)
	}
}

// children are pid's child processes, none when it has gone.
func children(pid int) []int {
	c, _ := procfs.Children(pid)
	return c
}

// deployFile replaces path's content atomically, as a deploy would.
func deployFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path+".new", []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		tb.Fatal(err)
	}
}

// shimApp is one sockshim app of an example's config, with the release
// directory its worker runs from.
type shimApp struct {
	reloader
	a         *app
	dir       string
	accepting bool // ready = "accepting": a broken deploy must be refused
}

// sockshimApps installs and activates, as units unit and unit-accepting,
// the example config (a path under examples/) as it is and, unless it
// already says so, with ready = "accepting" in place of its readiness
// keys. prepare puts release 1 in the app's directory and returns the
// config for that directory and the app's port; deploy puts release i
// there.
func sockshimApps(b *testing.B, m *testenv.Manager, bb bins, unit, example string,
	prepare func(dir string, port int, cfg string) string, deploy func(dir string, i int)) []*shimApp {
	raw, err := os.ReadFile(filepath.Join("..", "examples", example))
	if err != nil {
		b.Fatal(err)
	}
	cfg := string(raw)
	// The readiness keys go at the end, which must be the [[worker]] table.
	if strings.LastIndex(cfg, "\n[") != strings.LastIndex(cfg, "\n[[worker]]") {
		b.Fatalf("examples/%s: a table follows its [[worker]]; the benchmark appends ready = \"accepting\" to the worker", example)
	}
	var ready, rest []string
	for _, l := range strings.Split(cfg, "\n") {
		if k, _, ok := strings.Cut(l, "="); ok && (strings.TrimSpace(k) == "ready" || strings.TrimSpace(k) == "ready_delay") {
			ready = append(ready, "`"+strings.TrimSpace(l)+"`")
			continue
		}
		rest = append(rest, l)
	}
	variants := []struct {
		unit, label, cfg string
		accepting        bool
	}{{unit, "as it is (" + strings.Join(ready, ", ") + ")", cfg, slices.Contains(ready, "`ready = \"accepting\"`")}}
	if !variants[0].accepting {
		variants = append(variants, struct {
			unit, label, cfg string
			accepting        bool
		}{unit + "-accepting", "with `ready = \"accepting\"`", strings.TrimRight(strings.Join(rest, "\n"), "\n") + "\nready = \"accepting\"\n", true})
	}
	var apps []*shimApp
	for _, v := range variants {
		dir := b.TempDir()
		a := installApp(b, m, bb, v.unit, "")
		a.rewrite(b, prepare(dir, a.port, v.cfg))
		a.activate(b)
		apps = append(apps, &shimApp{a: a, dir: dir, accepting: v.accepting,
			reloader: sockshimReloader(b, m, a, fmt.Sprintf("sockshim, examples/%s %s, `systemctl reload`", example, v.label),
				func(i int) { deploy(dir, i) })})
	}
	return apps
}

// broken deploys a release that cannot start (breakIt); with ready =
// "accepting", sockshim must refuse it.
func (sh *shimApp) broken(b *testing.B, breakIt func()) brokenFigures {
	gen := status(b, sh.a.ctl).Generation
	f := brokenDeploy(b, sh.reloader, breakIt)
	if sh.accepting {
		checkRefused(b, sh.a, gen, f)
	}
	return f
}

func (sh *shimApp) stop(b *testing.B, m *testenv.Manager) {
	m.MustSystemctl(b, "stop", sh.a.name+".service", sh.a.name+".socket")
}

// pm2Version is the pm2 that nodeComparison installs from the npm registry.
const pm2Version = "7.0.4"

// nodeComparison reloads examples/node/app.js under pm2's cluster mode
// (with pm2's stop signal and with the one app.js drains on) and under
// sockshim with intercept_bind, then deploys a release that does not parse
// to pm2 and to sockshim.
func nodeComparison(b *testing.B, bb bins, m *testenv.Manager) string {
	n := serverReloadCount()
	needProgram(b, "/usr/bin/node", "nodejs")
	pm2Bin := installPM2(b)
	pm2Default := startPM2(b, m, pm2Bin, "bench-pm2", "")
	pm2Term := startPM2(b, m, pm2Bin, "bench-pm2-term", "SIGTERM")

	shims := sockshimApps(b, m, bb, "bench-node", "node/node.toml", func(dir string, port int, cfg string) string {
		nodeReleaseIn(b, dir)
		return strings.NewReplacer("/srv/myapp", dir, "8080", strconv.Itoa(port)).Replace(cfg)
	}, func(dir string, i int) { deployFile(b, filepath.Join(dir, "VERSION"), fmt.Sprintf("v%d\n", i)) })

	contenders := []reloader{pm2Default.reloader(b), pm2Term.reloader(b)}
	for _, sh := range shims {
		contenders = append(contenders, sh.reloader)
	}
	rows := compareReloads(b, contenders, n)
	killed := []int{pm2Default.sigkills(b), pm2Term.sigkills(b)}
	broken := []brokenFigures{brokenDeploy(b, pm2Term.reloader(b), func() { breakNode(b, pm2Term.dir) })}
	for _, sh := range shims {
		broken = append(broken, sh.broken(b, func() { breakNode(b, sh.dir) }))
	}
	pm2Default.stop(b)
	pm2Term.stop(b)
	for _, sh := range shims {
		sh.stop(b, m)
	}

	var s strings.Builder
	fmt.Fprintf(&s, "### Node.js: pm2's cluster mode and sockshim\n\n"+
		"[`examples/node/app.js`](examples/node/app.js), the same file for both: it calls `server.listen(PORT, HOST)` and, on SIGTERM, "+
		"`server.close()`. pm2 %s from the npm registry, installed by the harness (`npm install --prefix DIR pm2@%s`); its daemon "+
		"runs as a service of the same user manager as sockshim (`Type=forking`, as `pm2 startup` writes it), with a `PM2_HOME` of its own. "+
		"`pm2 start app.js -i 2` (cluster mode: pm2's daemon accepts and hands each connection to one of 2 instances), then "+
		"`pm2 reload app` run by the harness, which stops each old instance with SIGINT (pm2's default: app.js does not handle it, so "+
		"Node exits at once) or, with `PM2_KILL_SIGNAL=SIGTERM`, with the signal app.js drains on. sockshim: "+
		"[`examples/node/node.toml`](examples/node/node.toml), as it is and with `ready = \"accepting\"`. The steady rounds (%d of %s each) alternate between all; "+
		"then each gets %d reloads in a row, each a new release (the VERSION file app.js reads at start), the next begun once every "+
		"process the last one replaced has exited. The broken release is app.js with a stray `}` on its first line, which does not parse.\n\n",
		pm2Version, pm2Version, steadyRounds, steadyRound, n)
	comparisonTables(&s, n, rows, broken)
	fmt.Fprintf(&s, "pm2 killed with SIGKILL, after its `kill_timeout` (1.6 s), %d of the %d old instances it stopped in the SIGINT series "+
		"and %d of %d in the SIGTERM series (its log: \"sending SIGKILL\"): on SIGTERM app.js closes its server and finishes its requests, "+
		"but a cluster instance keeps its IPC channel to pm2's daemon open, which keeps Node running. In the broken deploy pm2 waits, "+
		"for each instance, up to its `listen_timeout` (3 s) for the new one's `listening` event, then stops the old one whether or "+
		"not it came (`hardReload` in pm2's lib/God/Reload.js), and reports success.\n\n", killed[0], 2*n, killed[1], 2*n)
	return s.String()
}

// nodeRelease copies examples/node into a directory of its own, release 1.
func nodeRelease(b *testing.B) string {
	dir := b.TempDir()
	nodeReleaseIn(b, dir)
	return dir
}

// nodeReleaseIn copies examples/node into dir, release 1.
func nodeReleaseIn(b *testing.B, dir string) {
	for _, f := range []string{"app.js", "VERSION"} {
		src, err := os.ReadFile(filepath.Join("..", "examples", "node", f))
		if err != nil {
			b.Fatal(err)
		}
		deployFile(b, filepath.Join(dir, f), string(src))
	}
	deployFile(b, filepath.Join(dir, "VERSION"), "v1\n")
}

// breakNode makes dir's app.js a file that does not parse.
func breakNode(b *testing.B, dir string) {
	good, err := os.ReadFile(filepath.Join(dir, "app.js"))
	if err != nil {
		b.Fatal(err)
	}
	deployFile(b, filepath.Join(dir, "app.js"), "} // a broken release: this file does not parse\n"+string(good))
}

// installPM2 installs pm2Version with npm into a scratch directory and
// returns its command.
func installPM2(b *testing.B) string {
	if _, err := exec.LookPath("npm"); err != nil {
		b.Fatalf("npm not found: apt-get install npm")
	}
	dir := b.TempDir()
	cmd := exec.Command("npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error", "pm2@"+pm2Version)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("npm install pm2@%s (from the npm registry): %v\n%s", pm2Version, err, out)
	}
	var pkg struct{ Version string }
	raw, err := os.ReadFile(filepath.Join(dir, "node_modules", "pm2", "package.json"))
	if err == nil {
		err = json.Unmarshal(raw, &pkg)
	}
	if err != nil || pkg.Version != pm2Version {
		b.Fatalf("npm installed pm2 %q, want %s: %v", pkg.Version, pm2Version, err)
	}
	return filepath.Join(dir, "node_modules", ".bin", "pm2")
}

// pm2 is one pm2 daemon, a service of the user manager, with app.js.
type pm2 struct {
	m         *testenv.Manager
	unit      string
	bin, home string
	dir       string // app.js and VERSION
	env       []string
	url       string
	daemon    int // its pid; 0 once stopped
	name      string
}

// startPM2 starts unit, a pm2 daemon in a PM2_HOME of its own, and
// app.js of a release directory of its own in cluster mode, 2 instances,
// on a free loopback port; killSignal is PM2_KILL_SIGNAL ("": pm2's
// default, SIGINT).
func startPM2(b *testing.B, m *testenv.Manager, bin, unit, killSignal string) *pm2 {
	port := testenv.FreePort(b)
	p := &pm2{m: m, unit: unit, bin: bin, home: b.TempDir(), dir: nodeRelease(b), url: fmt.Sprintf("http://127.0.0.1:%d/", port),
		name: "pm2 " + pm2Version + " cluster mode, 2 instances, `pm2 reload`, stop signal SIGINT (pm2's default)"}
	env := []string{"PM2_HOME=" + p.home, "HOST=127.0.0.1", "PORT=" + strconv.Itoa(port)}
	if killSignal != "" {
		env = append(env, "PM2_KILL_SIGNAL="+killSignal)
		p.name = "pm2 " + pm2Version + " cluster mode, 2 instances, `pm2 reload`, `PM2_KILL_SIGNAL=" + killSignal + "`"
	}
	p.env = append(os.Environ(), env...)
	// The daemon forks away from `pm2 start`, which returns once the app
	// is started; PIDFile names it to systemd.
	m.WriteUnit(b, unit+".service", fmt.Sprintf(`[Unit]
Description=pm2 for the benchmark
[Service]
Type=forking
Environment=%s
PIDFile=%s
ExecStart=%s start %s -i 2 --name app
ExecStop=%s kill
TimeoutStartSec=60
TimeoutStopSec=30
`, strings.Join(env, " "), filepath.Join(p.home, "pm2.pid"), bin, filepath.Join(p.dir, "app.js"), bin))
	b.Cleanup(func() { p.stop(b) })
	m.MustSystemctl(b, "start", unit+".service")
	p.daemon = m.MainPID(b, unit+".service")
	waitFor(b, 30*time.Second, "pm2's app to answer", func() bool { return strings.HasPrefix(probe(p.url), "200,") })
	return p
}

// reloader reloads the app with `pm2 reload`, run as a deploy would run
// it; the processes a reload replaces are the daemon's children, which
// are the app's instances.
func (p *pm2) reloader(b *testing.B) reloader {
	return reloader{
		name:   p.name,
		url:    p.url,
		deploy: func(i int) { deployFile(b, filepath.Join(p.dir, "VERSION"), fmt.Sprintf("v%d\n", i)) },
		reload: func() (string, error) {
			cmd := exec.Command(p.bin, "reload", "app")
			cmd.Env = p.env
			out, err := cmd.CombinedOutput()
			return string(out), err
		},
		old: func() []int { return children(p.daemon) },
		state: func() string {
			cmd := exec.Command(p.bin, "jlist")
			cmd.Env = p.env
			out, err := cmd.Output()
			var procs []struct {
				PID int `json:"pid"`
				Env struct {
					Status   string `json:"status"`
					Restarts int    `json:"restart_time"`
				} `json:"pm2_env"`
			}
			if err == nil {
				err = json.Unmarshal(out, &procs)
			}
			if err != nil {
				return fmt.Sprintf("pm2 jlist: %v", err)
			}
			var st []string
			for _, pr := range procs {
				st = append(st, fmt.Sprintf("%s (pid %d, %d restarts)", pr.Env.Status, pr.PID, pr.Env.Restarts))
			}
			return "`pm2 jlist`: " + strings.Join(st, ", ")
		},
	}
}

// sigkills counts the instances pm2's log says it killed with SIGKILL.
func (p *pm2) sigkills(b *testing.B) int {
	log, err := os.ReadFile(filepath.Join(p.home, "pm2.log"))
	if err != nil {
		b.Fatal(err)
	}
	return strings.Count(string(log), "sending SIGKILL")
}

// stop stops the service (`pm2 kill`, then systemd ends what is left in
// its cgroup) and makes sure the daemon and its instances are gone,
// killing by pid whatever survived.
func (p *pm2) stop(tb testing.TB) {
	if p.daemon == 0 {
		return
	}
	procs := append(testenv.Descendants(p.daemon), p.daemon)
	if out, err := p.m.Systemctl("stop", p.unit+".service"); err != nil {
		tb.Logf("stopping %s: %v\n%s", p.unit, err, out)
	}
	for _, pid := range procs {
		if testenv.Alive(pid) {
			tb.Logf("pm2 process %d outlived its service; killing it", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	p.daemon = 0
}

// nginxComparison reloads examples/nginx under nginx's own reload and
// under sockshim with intercept_bind, then deploys a release.conf with a
// typo to each.
func nginxComparison(b *testing.B, bb bins, m *testenv.Manager) string {
	n := serverReloadCount()
	needProgram(b, "/usr/sbin/nginx", "nginx-light")
	release := func(dir string) func(i int) {
		return func(i int) {
			deployFile(b, filepath.Join(dir, "release.conf"), fmt.Sprintf("add_header X-Version v%d always;\n", i))
		}
	}
	// A typo: the ; missing at the end of the directive.
	breakIt := func(dir string) func() {
		return func() { deployFile(b, filepath.Join(dir, "release.conf"), "add_header X-Version broken always\n") }
	}

	// nginx alone, as a service of the same manager: the master in the
	// foreground (nginx.conf says daemon off) is the main process.
	ownDir := b.TempDir()
	port := testenv.FreePort(b)
	nginxRelease(b, ownDir, port)
	args := fmt.Sprintf("-c %s -g \"pid %s;\"", filepath.Join(ownDir, "nginx.conf"), filepath.Join(ownDir, "nginx.pid"))
	m.WriteUnit(b, "bench-nginx-own.service", fmt.Sprintf(`[Unit]
Description=nginx alone for the benchmark
[Service]
ExecStart=/usr/sbin/nginx %s
KillSignal=SIGQUIT
KillMode=mixed
TimeoutStopSec=30
`, args))
	m.MustSystemctl(b, "start", "bench-nginx-own.service")
	master := m.MainPID(b, "bench-nginx-own.service")
	own := reloader{
		name:   nginxVersion(b) + " alone, `nginx -s reload`",
		url:    fmt.Sprintf("http://127.0.0.1:%d/", port),
		deploy: release(ownDir),
		reload: func() (string, error) {
			out, err := exec.Command("/usr/sbin/nginx", "-c", filepath.Join(ownDir, "nginx.conf"),
				"-g", "pid "+filepath.Join(ownDir, "nginx.pid")+";", "-s", "reload").CombinedOutput()
			return string(out), err
		},
		old:   func() []int { return children(master) },
		state: func() string { return fmt.Sprintf("master pid %d, workers %v", master, children(master)) },
	}
	waitFor(b, 10*time.Second, "nginx to answer", func() bool { return strings.HasPrefix(probe(own.url), "200,") })

	shims := sockshimApps(b, m, bb, "bench-nginx", "nginx/nginx.toml", func(dir string, port int, cfg string) string {
		nginxRelease(b, dir, port)
		return strings.ReplaceAll(cfg, "/srv/myapp", dir)
	}, func(dir string, i int) { release(dir)(i) })

	contenders := []reloader{own}
	for _, sh := range shims {
		contenders = append(contenders, sh.reloader)
	}
	rows := compareReloads(b, contenders, n)
	broken := []brokenFigures{brokenDeploy(b, own, breakIt(ownDir))}
	for _, sh := range shims {
		broken = append(broken, sh.broken(b, breakIt(sh.dir)))
	}
	m.MustSystemctl(b, "stop", "bench-nginx-own.service")
	for _, sh := range shims {
		sh.stop(b, m)
	}

	var s strings.Builder
	fmt.Fprintf(&s, "### nginx: its own reload and sockshim\n\n"+
		"Debian's nginx-light, [`examples/nginx/nginx.conf`](examples/nginx/nginx.conf) for both (2 worker processes, `return 200`), "+
		"its `listen` on the benchmark's port. Alone: the master in the foreground as a service of the same user manager, reloaded with "+
		"`nginx -s reload` run by the harness (SIGHUP: the master reads the config again, starts new workers and tells the old ones "+
		"to finish). sockshim: [`examples/nginx/nginx.toml`](examples/nginx/nginx.toml), as it is and with `ready = \"accepting\"`; "+
		"a reload starts a new master. The steady rounds (%d of %s each) alternate between all; then each gets %d reloads in a row, each a new release.conf "+
		"(an `add_header` with the release's version), the next begun once every process the last one replaced has exited. The broken "+
		"release.conf lacks the `;` at the end of its directive.\n\n", steadyRounds, steadyRound, n)
	comparisonTables(&s, n, rows, broken)
	return s.String()
}

// nginxRelease puts examples/nginx's nginx.conf, for dir and port, and
// release 1 in dir.
func nginxRelease(b *testing.B, dir string, port int) {
	conf, err := os.ReadFile("../examples/nginx/nginx.conf")
	if err != nil {
		b.Fatal(err)
	}
	deployFile(b, filepath.Join(dir, "nginx.conf"),
		strings.NewReplacer("/srv/myapp", dir, "127.0.0.1:8080", fmt.Sprintf("127.0.0.1:%d", port)).Replace(string(conf)))
	deployFile(b, filepath.Join(dir, "release.conf"), "add_header X-Version v1 always;\n")
}

// nginxVersion is what `nginx -v` says, "nginx/1.22.1".
func nginxVersion(b *testing.B) string {
	out, err := exec.Command("/usr/sbin/nginx", "-v").CombinedOutput()
	v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "nginx version: ")
	if err != nil || !ok {
		b.Fatalf("nginx -v: %v\n%s", err, out)
	}
	return v
}

// TestSpliceSection: BenchmarkServers replaces its section of
// BENCHMARKS.md, and only it, or puts it before the latency picture.
func TestSpliceSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	const head = "# b\n\n## One\n\none\n\n"
	const tail = latencyHeading + "\n\npicture\n"
	for _, c := range []struct{ doc, want string }{
		{head + tail, head + serversHeading + "\n\nnew\n\n" + tail},
		{head + serversHeading + "\n\nold\n\n### sub\n\nold\n\n" + tail, head + serversHeading + "\n\nnew\n\n" + tail},
		{head + serversHeading + "\n\nold at the end\n", head + serversHeading + "\n\nnew\n\n"},
	} {
		if err := os.WriteFile(path, []byte(c.doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := spliceSection(path, serversHeading, serversHeading+"\n\nnew\n\n"); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != c.want {
			t.Errorf("splicing into\n%q\ngot\n%q\nwant\n%q", c.doc, got, c.want)
		}
	}
	if err := os.WriteFile(path, []byte(head), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := spliceSection(path, serversHeading, "new\n"); err == nil {
		t.Errorf("spliced into a document with neither %q nor %q", serversHeading, latencyHeading)
	}
}
