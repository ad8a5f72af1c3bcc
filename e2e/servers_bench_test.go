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
// SOCKSHIM_BENCH_SERVER_RELOADS sets the reloads per server (default 5).
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

// interceptCost runs the same testworker under the same load, in two
// sockshim apps of 2 workers that differ only in how the worker gets its
// socket: LISTEN_FDS, or its own net.Listen (-bind) of the held address,
// which intercept_bind answers with the held socket. Rounds alternate
// between the two, so drift hits both alike.
func interceptCost(b *testing.B, bb bins, m *testenv.Manager) string {
	const rounds, round = 6, 4 * time.Second
	fds := installApp(b, m, bb, "bench-fds", workerConfig(bb, "v1", "rolling", 1, 2))
	fds.activate(b)
	// The worker's -bind address is the app's port, which installApp
	// picks; sockshim reads its config only when the first connection
	// starts it.
	bind := installApp(b, m, bb, "bench-bind", "")
	bind.rewrite(b, workerConfig(bb, "v1", "rolling", 1, 2, "-bind", fmt.Sprintf("127.0.0.1:%d", bind.port))+"intercept_bind = true\n")
	bind.activate(b)
	var fRes, bRes []*load.Result
	var pairs []float64
	for range rounds {
		f := runLoad(b, fds.url, 16, round, false)
		bl := runLoad(b, bind.url, 16, round, false)
		for _, r := range []*load.Result{f, bl} {
			if r.Failed() != 0 {
				b.Errorf("intercept cost: %d failed requests without any reload: %v %v", r.Failed(), r.Failures, r.Examples)
			}
		}
		fRes, bRes = append(fRes, f), append(bRes, bl)
		pairs = append(pairs, rate(bl)/rate(f))
	}
	fRate, fP99 := rateP99(fRes)
	bRate, bP99 := rateP99(bRes)
	fSup, bSup := status(b, fds.ctl).PID, status(b, bind.ctl).PID
	lo, hi := pairs[0], pairs[0]
	for _, p := range pairs {
		lo, hi = min(lo, p), max(hi, p)
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
		"The testworker, 2 workers under sockshim, %d interleaved rounds of %s each: once taking `LISTEN_FDS`, once "+
		"binding 127.0.0.1:PORT itself (`-bind`, Go's `net.Listen`) with `intercept_bind = true`, which gives it the held "+
		"socket. The filter matches only `bind` and `listen`; every other call of the worker, each request's included, "+
		"runs as without it.\n\n", rounds, round)
	s.WriteString("| worker gets its socket by | requests/s | p99 latency | sockshim RSS |\n|---|---|---|---|\n")
	fmt.Fprintf(&s, "| `LISTEN_FDS` | %.0f | %s | %d KiB |\n", fRate, fP99, rssKiB(fSup))
	fmt.Fprintf(&s, "| its own `bind(2)`, intercept_bind | %.0f | %s | %d KiB |\n", bRate, bP99, rssKiB(bSup))
	fmt.Fprintf(&s, "| **ratio intercept_bind / LISTEN_FDS** | **%.3f** (rounds: %.3f to %.3f) | **%.2f** | |\n\n",
		bRate/fRate, lo, hi, float64(bP99)/float64(fP99))
	fmt.Fprintf(&s, "Binaries as the harness builds them (static, not stripped): sockshim %.1f MiB, %s (the trampoline, which installs the filter) %.1f MiB.\n\n",
		mib(bb.sockshim), handoff.BinaryName, mib(filepath.Join(filepath.Dir(bb.sockshim), handoff.BinaryName)))
	m.MustSystemctl(b, "stop", "bench-fds.service", "bench-fds.socket", "bench-bind.service", "bench-bind.socket")
	return s.String()
}

// rate is a run's requests per second.
func rate(r *load.Result) float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// serverReloads is how many reloads each server gets under load in the
// comparison (the figures are of 5).
func serverReloadCount() int { return envInt("SOCKSHIM_BENCH_SERVER_RELOADS", 5) }

// brokenWait is how long after a broken deploy's reload returned the
// comparison asks whether anything answers.
const brokenWait = 3 * time.Second

// reloader is one server under one way of reloading it.
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
	steady         time.Duration
	res            *load.Result
	returned, gone []time.Duration // per reload: until the command returned; until the old processes exited
	refused        int             // reload commands that exited non-zero
}

// reloadSeriesOf measures the steady p99, then does n reloads in a row
// under load, each a new release: the command, then a wait until every
// process it replaces has exited.
func reloadSeriesOf(b *testing.B, r reloader, n int) reloadFigures {
	o := load.Options{URL: r.url, Concurrency: 16}
	f := reloadFigures{name: r.name, steady: steadyP99(b, o)}
	f.res = underLoad(b, o, func() {
		for i := 2; i <= n+1; i++ {
			r.deploy(i)
			old := r.old()
			start := time.Now()
			if out, err := r.reload(); err != nil {
				f.refused++
				b.Logf("%s: reload to release %d: %v\n%s", r.name, i, err, out)
			}
			f.returned = append(f.returned, time.Since(start))
			awaitExit(b, old)
			f.gone = append(f.gone, time.Since(start))
		}
	})
	if r.ours && (f.res.Failed() != 0 || f.refused != 0) {
		b.Errorf("%s: %d reloads refused, %d failed requests: %v %v", r.name, f.refused, f.res.Failed(), f.res.Failures, f.res.Examples)
	}
	return f
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
	fmt.Fprintf(s, "| case | reloads | requests | failed | longest gap | p99 steady | p99 during reloads | reload command returned p50 / max | → replaced processes exited p50 / max |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range rows {
		reloads := strconv.Itoa(n)
		if f.refused > 0 {
			reloads = fmt.Sprintf("%d (%d refused)", n, f.refused)
		}
		fmt.Fprintf(s, "| %s | %s | %d | %s | %s | %s | %s | %s / %s | %s / %s |\n", f.name, reloads, f.res.Requests, failedCell(f.res),
			f.res.LongestGap.Round(time.Millisecond), f.steady, f.res.P99.Round(10*time.Microsecond),
			pct(f.returned, 50), pct(f.returned, 100), pct(f.gone, 50), pct(f.gone, 100))
	}
	fmt.Fprintf(s, "\n| broken deploy: reload of a release that cannot start | reload command's exit status | returned after | requests from the reload to %s after | failed | a request %s after the reload returned | then |\n|---|---|---|---|---|---|---|\n", brokenWait, brokenWait)
	for _, f := range broken {
		fmt.Fprintf(s, "| %s | %s | %s | %d | %s | %s | %s |\n", f.name, f.exit, f.took.Round(time.Millisecond), f.res.Requests, failedCell(f.res), f.answer, f.state)
	}
	s.WriteString("\n")
}

// pm2Version is the pm2 that nodeComparison installs from the npm registry.
const pm2Version = "7.0.4"

// nodeComparison reloads examples/node/app.js under pm2's cluster mode
// (with pm2's stop signal and with the one app.js drains on) and under
// sockshim with intercept_bind, then deploys a release that does not parse
// to each.
func nodeComparison(b *testing.B, bb bins, m *testenv.Manager) string {
	n := serverReloadCount()
	needFile(b, "/usr/bin/node", "nodejs")
	pm2Bin := installPM2(b)
	var rows []reloadFigures
	var broken []brokenFigures
	for _, sig := range []string{"", "SIGTERM"} {
		dir := nodeRelease(b)
		p := startPM2(b, pm2Bin, dir, sig)
		r := p.reloader(b, dir)
		rows = append(rows, reloadSeriesOf(b, r, n))
		if sig == "SIGTERM" {
			broken = append(broken, brokenDeploy(b, r, func() { breakNode(b, dir) }))
		}
		p.kill(b)
	}

	dir := nodeRelease(b)
	a := installApp(b, m, bb, "bench-node", "")
	cfg, err := os.ReadFile("../examples/node/node.toml")
	if err != nil {
		b.Fatal(err)
	}
	a.rewrite(b, strings.NewReplacer("/srv/myapp", dir, "8080", strconv.Itoa(a.port)).Replace(string(cfg)))
	a.activate(b)
	r := sockshimReloader(b, m, a, "sockshim, examples/node/node.toml (intercept_bind = true, 2 workers), `systemctl reload`",
		func(i int) { writeFile(b, filepath.Join(dir, "VERSION"), fmt.Sprintf("v%d\n", i)) })
	rows = append(rows, reloadSeriesOf(b, r, n))
	gen := status(b, a.ctl).Generation
	bf := brokenDeploy(b, r, func() { breakNode(b, dir) })
	if bf.exit == "0" || status(b, a.ctl).Generation != gen || bf.res.Failed() != 0 || !strings.HasPrefix(bf.answer, "200,") {
		b.Errorf("%s: broken deploy: reload exit %s, generation %d (was %d), %s, then %s; want the reload refused and generation %d serving, no failed request",
			r.name, bf.exit, status(b, a.ctl).Generation, gen, bf.res, bf.answer, gen)
	}
	broken = append(broken, bf)
	m.MustSystemctl(b, "stop", "bench-node.service", "bench-node.socket")

	var s strings.Builder
	fmt.Fprintf(&s, "### Node.js: pm2's cluster mode and sockshim\n\n"+
		"[`examples/node/app.js`](examples/node/app.js), the same file for both: it calls `server.listen(PORT, HOST)` and, on SIGTERM, "+
		"`server.close()`. pm2 %s from the npm registry, installed by the harness (`npm install --prefix DIR pm2@%s`), its daemon in a "+
		"`PM2_HOME` of its own: `pm2 start app.js -i 2` (cluster mode, 2 instances), then `pm2 reload app`, which stops each old "+
		"instance with SIGINT (pm2's default: app.js does not handle it, so Node exits at once) or, with `PM2_KILL_SIGNAL=SIGTERM`, with "+
		"the signal app.js drains on. sockshim: [`examples/node/node.toml`](examples/node/node.toml) as it is, under a systemd user "+
		"manager. Every reload is a new release (the VERSION file app.js reads at start); the next one begins once every process the "+
		"last one replaced has exited. The broken release is app.js with a stray `}` on its first line, which does not parse.\n\n",
		pm2Version, pm2Version)
	comparisonTables(&s, n, rows, broken)
	return s.String()
}

// nodeRelease copies examples/node into a directory of its own, release 1.
func nodeRelease(b *testing.B) string {
	dir := b.TempDir()
	for _, f := range []string{"app.js", "VERSION"} {
		src, err := os.ReadFile(filepath.Join("..", "examples", "node", f))
		if err != nil {
			b.Fatal(err)
		}
		writeFile(b, filepath.Join(dir, f), string(src))
	}
	writeFile(b, filepath.Join(dir, "VERSION"), "v1\n")
	return dir
}

// breakNode makes dir's app.js a file that does not parse.
func breakNode(b *testing.B, dir string) {
	good, err := os.ReadFile(filepath.Join(dir, "app.js"))
	if err != nil {
		b.Fatal(err)
	}
	writeFile(b, filepath.Join(dir, "app.js"), "} // a broken release: this file does not parse\n"+string(good))
}

// writeFile replaces path's content atomically, as a deploy would.
func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path+".new", []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		tb.Fatal(err)
	}
}

// needFile fails the benchmark when a program it compares against is not
// installed.
func needFile(tb testing.TB, path, pkg string) {
	tb.Helper()
	if _, err := os.Stat(path); err != nil {
		tb.Fatalf("%s not found: apt-get install %s", path, pkg)
	}
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

// pm2 is one pm2 daemon the benchmark started, with its app.
type pm2 struct {
	bin, home string
	env       []string
	url       string
	daemon    int // 0 once killed
	name      string
}

// startPM2 starts a pm2 daemon in a PM2_HOME of its own, and dir's app.js
// in cluster mode, 2 instances, on a free loopback port; killSignal is
// PM2_KILL_SIGNAL ("": pm2's default, SIGINT).
func startPM2(b *testing.B, bin, dir, killSignal string) *pm2 {
	port := testenv.FreePort(b)
	p := &pm2{bin: bin, home: b.TempDir(), url: fmt.Sprintf("http://127.0.0.1:%d/", port),
		name: "pm2 " + pm2Version + " cluster mode, 2 instances, `pm2 reload`, stop signal SIGINT (pm2's default)"}
	p.env = append(os.Environ(), "PM2_HOME="+p.home, "HOST=127.0.0.1", "PORT="+strconv.Itoa(port))
	if killSignal != "" {
		p.env = append(p.env, "PM2_KILL_SIGNAL="+killSignal)
		p.name = "pm2 " + pm2Version + " cluster mode, 2 instances, `pm2 reload`, `PM2_KILL_SIGNAL=" + killSignal + "`"
	}
	b.Cleanup(func() { p.kill(b) })
	if out, err := p.run("start", filepath.Join(dir, "app.js"), "-i", "2", "--name", "app"); err != nil {
		b.Fatalf("pm2 start: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(p.home, "pm2.pid"))
	if err == nil {
		p.daemon, err = strconv.Atoi(strings.TrimSpace(string(raw)))
	}
	if err != nil {
		b.Fatalf("pm2's daemon pid: %v", err)
	}
	waitFor(b, 30*time.Second, "pm2's app to answer", func() bool { return strings.HasPrefix(probe(p.url), "200,") })
	return p
}

func (p *pm2) run(args ...string) (string, error) {
	cmd := exec.Command(p.bin, args...)
	cmd.Env = p.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// reloader reloads the app with `pm2 reload`; the processes a reload
// replaces are the daemon's children, which are the app's instances.
func (p *pm2) reloader(b *testing.B, dir string) reloader {
	return reloader{
		name:   p.name,
		url:    p.url,
		deploy: func(i int) { writeFile(b, filepath.Join(dir, "VERSION"), fmt.Sprintf("v%d\n", i)) },
		reload: func() (string, error) { return p.run("reload", "app") },
		old:    func() []int { return children(p.daemon) },
		state: func() string {
			out, err := p.run("jlist")
			var procs []struct {
				PID int `json:"pid"`
				Env struct {
					Status   string `json:"status"`
					Restarts int    `json:"restart_time"`
				} `json:"pm2_env"`
			}
			if err == nil {
				err = json.Unmarshal([]byte(out), &procs)
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

// kill stops the daemon with `pm2 kill`, then kills by pid whatever of it
// and its children is left after 10 s.
func (p *pm2) kill(tb testing.TB) {
	if p.daemon == 0 {
		return
	}
	procs := append(testenv.Descendants(p.daemon), p.daemon)
	if out, err := p.run("kill"); err != nil {
		tb.Logf("pm2 kill: %v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range procs {
		for testenv.Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if testenv.Alive(pid) {
			tb.Logf("pm2 kill left pid %d; killing it", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	p.daemon = 0
}

// children are pid's child processes, none when it has gone.
func children(pid int) []int {
	c, _ := procfs.Children(pid)
	return c
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

// nginxComparison reloads examples/nginx under nginx's own reload and
// under sockshim with intercept_bind, then deploys a release.conf with a
// typo to each.
func nginxComparison(b *testing.B, bb bins, m *testenv.Manager) string {
	n := serverReloadCount()
	needFile(b, "/usr/sbin/nginx", "nginx-light")
	release := func(dir string) func(i int) {
		return func(i int) {
			writeFile(b, filepath.Join(dir, "release.conf"), fmt.Sprintf("add_header X-Version v%d always;\n", i))
		}
	}
	// A typo: the ; missing at the end of the directive.
	breakIt := func(dir string) func() {
		return func() { writeFile(b, filepath.Join(dir, "release.conf"), "add_header X-Version broken always\n") }
	}

	dir := b.TempDir()
	port := testenv.FreePort(b)
	nginxRelease(b, dir, port)
	pidFile := filepath.Join(dir, "nginx.pid")
	conf := []string{"-c", filepath.Join(dir, "nginx.conf"), "-g", "pid " + pidFile + ";"}
	master := exec.Command("/usr/sbin/nginx", conf...)
	logf, err := os.Create(filepath.Join(dir, "error.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	master.Stdout, master.Stderr = logf, logf
	if err := master.Start(); err != nil {
		b.Fatalf("nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { master.Wait(); close(exited) }()
	stopMaster := func() {
		select {
		case <-exited:
			return
		default:
		}
		workers := children(master.Process.Pid)
		master.Process.Signal(syscall.SIGQUIT) // nginx's graceful stop
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			b.Logf("nginx master %d still there 10 s after SIGQUIT; killing it and its workers", master.Process.Pid)
			for _, pid := range append(workers, master.Process.Pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			<-exited
		}
	}
	b.Cleanup(stopMaster)
	own := reloader{
		name:   nginxVersion(b) + " alone, `nginx -s reload`",
		url:    fmt.Sprintf("http://127.0.0.1:%d/", port),
		deploy: release(dir),
		reload: func() (string, error) {
			out, err := exec.Command("/usr/sbin/nginx", append(conf, "-s", "reload")...).CombinedOutput()
			return string(out), err
		},
		old: func() []int { return children(master.Process.Pid) },
		state: func() string {
			return fmt.Sprintf("master pid %d, workers %v", master.Process.Pid, children(master.Process.Pid))
		},
	}
	waitFor(b, 10*time.Second, "nginx to answer", func() bool { return strings.HasPrefix(probe(own.url), "200,") })
	rows := []reloadFigures{reloadSeriesOf(b, own, n)}
	broken := []brokenFigures{brokenDeploy(b, own, breakIt(dir))}
	stopMaster()

	dir = b.TempDir()
	a := installApp(b, m, bb, "bench-nginx", "")
	nginxRelease(b, dir, a.port)
	cfg, err := os.ReadFile("../examples/nginx/nginx.toml")
	if err != nil {
		b.Fatal(err)
	}
	a.rewrite(b, strings.ReplaceAll(string(cfg), "/srv/myapp", dir))
	a.activate(b)
	r := sockshimReloader(b, m, a, "sockshim, examples/nginx/nginx.toml (intercept_bind = true, 1 master), `systemctl reload`", release(dir))
	rows = append(rows, reloadSeriesOf(b, r, n))
	gen := status(b, a.ctl).Generation
	bf := brokenDeploy(b, r, breakIt(dir))
	if bf.exit == "0" || status(b, a.ctl).Generation != gen || bf.res.Failed() != 0 || !strings.HasPrefix(bf.answer, "200,") {
		b.Errorf("%s: broken deploy: reload exit %s, generation %d (was %d), %s, then %s; want the reload refused and generation %d serving, no failed request",
			r.name, bf.exit, status(b, a.ctl).Generation, gen, bf.res, bf.answer, gen)
	}
	broken = append(broken, bf)
	m.MustSystemctl(b, "stop", "bench-nginx.service", "bench-nginx.socket")

	var s strings.Builder
	s.WriteString("### nginx: its own reload and sockshim\n\n" +
		"Debian's nginx-light, [`examples/nginx/nginx.conf`](examples/nginx/nginx.conf) for both (2 worker processes, `return 200`), " +
		"its `listen` on the benchmark's port. Alone: the master started by the harness in the foreground, reloaded with " +
		"`nginx -s reload` (SIGHUP: the master reads the config again, starts new workers and tells the old ones to finish). " +
		"sockshim: [`examples/nginx/nginx.toml`](examples/nginx/nginx.toml) as it is, under a systemd user manager; a reload starts a " +
		"new master. Every reload is a new release.conf (an `add_header` with the release's version); the next one begins once " +
		"every process the last one replaced has exited. The broken release.conf lacks the `;` at the end of its directive.\n\n")
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
	writeFile(b, filepath.Join(dir, "nginx.conf"),
		strings.NewReplacer("/srv/myapp", dir, "127.0.0.1:8080", fmt.Sprintf("127.0.0.1:%d", port)).Replace(string(conf)))
	writeFile(b, filepath.Join(dir, "release.conf"), "add_header X-Version v1 always;\n")
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
