package e2e

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/internal/cgroup"
	"github.com/sockshim/sockshim/internal/procfs"
	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// ownBinder is a server that binds its own port, run unmodified under
// sockshim with intercept_bind = true, for testOwnBind.
type ownBinder struct {
	name  string // of the units
	count int    // sockshim workers per generation
	// config is the [[worker]] part for a server that binds 127.0.0.1:port.
	config func(port int) string
	// release puts version v where the server's next start reads it.
	release func(a *app, v string)
	// breakDeploy makes the server's next start fail; failure is what the
	// server then says in the unit's output.
	breakDeploy func(a *app)
	failure     string
	// generation: the server answers with X-Generation.
	generation bool
	// afterStop checks that the server left nothing of its own behind.
	afterStop func(m *testenv.Manager)
}

// testOwnBind runs s behind a .socket unit in a private systemd user manager:
// the first connection starts it, its bind gets the unit's socket, reloads
// under load (new connections, then kept-alive ones) lose no request and
// serve each new version, a deploy that cannot start is refused while the old
// generation serves on, and stop leaves no process, no listener but
// systemd's, and nothing of the server's.
func testOwnBind(t *testing.T, s ownBinder) {
	b := build(t)
	m := testenv.StartUserManager(t)
	// The config names the port, which installApp picks: it is written
	// before anything reads it, when the first connection starts the unit.
	a := installApp(t, m, b, s.name, "")
	a.rewrite(t, s.config(a.port))
	s.release(a, "v1")
	first := a.activate(t)
	if first.version != "v1" || (s.generation && first.generation != "1") {
		t.Fatalf("first answer %+v, want v1 from generation 1", first)
	}
	if !strings.Contains(m.Log(), "intercept_bind: bind answered with a held socket") {
		t.Errorf("sockshim did not answer the server's bind with the held socket:\n%s", m.Log())
	}
	// systemd, sockshim and each worker hold the one socket; a worker's
	// children (nginx's) may.
	mainPID := m.MainPID(t, s.name+".service")
	checkListener(t, a.port, append([]int{m.PID, mainPID}, workerPIDs(status(t, a.ctl), "ready")...), testenv.Descendants(mainPID))

	version := 1
	next := func(int) { version++; s.release(a, fmt.Sprintf("v%d", version)) }
	served := func(int) {
		// The old generation may still take a connection it was
		// already waiting on before it closes its listener: the new
		// version must be what answers once it has.
		want := fmt.Sprintf("v%d", version)
		waitFor(t, 30*time.Second, s.name+" to serve "+want, func() bool { return get(t, a.url).version == want })
	}
	for _, keepAlive := range []bool{false, true} {
		n := serverReloads
		if keepAlive {
			n = 5
		}
		res := reloadUnderLoad(t, m, a, s.name, n, keepAlive, next, served)
		if final := fmt.Sprintf("v%d", version); res.Versions[final] == 0 {
			t.Errorf("keep-alive %t: the load never saw %s: %v", keepAlive, final, res.Versions)
		}
	}

	// A deploy that cannot start: the new worker exits before it is
	// ready, the reload fails, and the running generation serves on,
	// without a failed request. With ready = "delay", "before it is
	// ready" means within ready_delay, and on a busy machine Node took
	// 1.1 s to reach a syntax error in app.js (load average 10 on 2
	// cores): the test gives it 9 s (ready_timeout is 10 s), which costs
	// nothing here, since the reload fails as soon as the worker exits.
	final := fmt.Sprintf("v%d", version)
	s.breakDeploy(a)
	setReadyDelay(t, a, "9s")
	gen := status(t, a.ctl).Generation
	res := underLoad(t, load.Options{URL: a.url, Concurrency: 8}, func() {
		if out, err := m.Systemctl("reload", s.name+".service"); err == nil {
			t.Errorf("reload of a deploy that cannot start succeeded:\n%s", out)
		}
	})
	t.Logf("broken deploy: %s", res)
	if res.Failed() != 0 || res.Versions[final] != res.OK {
		t.Errorf("during the broken deploy: %s, versions %v; want every answer from %s", res, res.Versions, final)
	}
	checkGeneration(t, a, gen, s.count)
	if !strings.Contains(m.Log(), s.failure) {
		t.Errorf("%q is not in the unit's output", s.failure)
	}

	// Stop: every process of the service goes, and the port is back with
	// systemd's socket alone.
	mainPID = m.MainPID(t, s.name+".service")
	cg := serviceCgroup(t, mainPID)
	if filepath.Base(cg) == "supervisor" {
		cg = filepath.Dir(cg) // sockshim's leaf beside the workers' cgroups
	}
	procs := cgroupTree(t, cg)
	for _, pid := range append([]int{mainPID}, workerPIDs(status(t, a.ctl), "")...) {
		if !slices.Contains(procs, pid) {
			t.Fatalf("pid %d from status is not in the service's cgroup %s %v", pid, cg, procs)
		}
	}
	t.Logf("before stop: %d processes in the service's cgroup", len(procs))
	m.MustSystemctl(t, "stop", s.name+".service")
	testenv.WaitGone(t, procs, 10*time.Second)
	if _, err := os.Stat(cg); err == nil {
		if left := cgroupTree(t, cg); len(left) > 0 {
			t.Errorf("after stop, the service's cgroup holds %v", left)
		}
	}
	if res := m.Show(t, s.name+".service", "Result"); res != "success" {
		t.Errorf("after stop: Result=%s, want success", res)
	}
	checkListener(t, a.port, []int{m.PID}, nil)
	if s.afterStop != nil {
		s.afterStop(m)
	}
	m.MustSystemctl(t, "stop", s.name+".socket")
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", a.port), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d still accepting after the socket unit stopped", a.port)
	}
}

// setReadyDelay changes ready_delay in the app's config file.
func setReadyDelay(t *testing.T, a *app, d string) {
	t.Helper()
	b, err := os.ReadFile(a.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^ready_delay = ".*"$`)
	if !re.Match(b) {
		t.Fatalf("no ready_delay in %s:\n%s", a.cfgPath, b)
	}
	tmp := a.cfgPath + ".new"
	writeFile(t, tmp, re.ReplaceAllString(string(b), fmt.Sprintf("ready_delay = %q", d)))
	if err := os.Rename(tmp, a.cfgPath); err != nil {
		t.Fatal(err)
	}
}

// cgroupTree returns the processes in the cgroup dir and every cgroup
// below it.
func cgroupTree(t *testing.T, dir string) []int {
	t.Helper()
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		p, err := cgroup.Procs(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile
		}
		pids = append(pids, p...)
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reading cgroup %s: %v", dir, err)
	}
	return pids
}

// checkListener checks that 127.0.0.1:port has exactly one listening socket,
// that every process in must holds it and that no process outside must and
// may does: a server that bound a socket of its own, or a process that kept
// the held one, fails it.
func checkListener(t *testing.T, port int, must, may []int) {
	t.Helper()
	inodes := tcpListeners(t, port)
	if len(inodes) != 1 {
		t.Fatalf("%d listening sockets on 127.0.0.1:%d (inodes %v), want 1", len(inodes), port, inodes)
	}
	holders := socketHolders(t, inodes[0])
	for _, pid := range must {
		if !slices.Contains(holders, pid) {
			t.Errorf("pid %d does not hold the listening socket on 127.0.0.1:%d (held by %v)", pid, port, holders)
		}
	}
	for _, pid := range holders {
		if !slices.Contains(must, pid) && !slices.Contains(may, pid) {
			t.Errorf("pid %d (%s) holds the listening socket on 127.0.0.1:%d, want only %v and %v", pid, procfs.Comm(pid), port, must, may)
		}
	}
}

// tcpListeners returns the inodes of the sockets listening on 127.0.0.1:port
// in /proc/net/tcp (the test shares the manager's network namespace).
func tcpListeners(t *testing.T, port int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		// sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == "0A" {
			out = append(out, f[9])
		}
	}
	return out
}

// socketHolders returns, sorted, every process with a descriptor on the
// socket with this inode.
func socketHolders(t *testing.T, inode string) []int {
	t.Helper()
	pids, err := procfs.PIDs()
	if err != nil {
		t.Fatal(err)
	}
	target := "socket:[" + inode + "]"
	var out []int
	for _, pid := range pids {
		fds, err := procfs.FDs(pid)
		if err != nil {
			continue // gone meanwhile
		}
		for _, f := range fds {
			if f == target {
				out = append(out, pid)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// writeFile writes a file the way a deploy does before a reload.
func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestNodeBindsItsOwnPort: Node.js's http server (examples/node), two
// processes calling server.listen(PORT, HOST) on the socket unit's address.
// Each reload starts Node afresh, which reads the VERSION file again; an
// app.js with a syntax error is refused.
func TestNodeBindsItsOwnPort(t *testing.T) {
	needProgram(t, "/usr/bin/node", "nodejs")
	dir := t.TempDir()
	copyFile(t, filepath.Join("..", "examples", "node", "app.js"), filepath.Join(dir, "app.js"))
	testOwnBind(t, ownBinder{
		name:  "node",
		count: 2,
		config: func(port int) string {
			return exampleConfig(t, "node/node.toml", "/srv/myapp", dir, "8080", strconv.Itoa(port))
		},
		release: func(_ *app, v string) { writeFile(t, filepath.Join(dir, "VERSION"), v+"\n") },
		breakDeploy: func(*app) {
			f, err := os.OpenFile(filepath.Join(dir, "app.js"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString("\nserver.close(;\n"); err != nil {
				t.Fatal(err)
			}
		},
		failure:    "SyntaxError",
		generation: true,
	})
}

// TestNginxBindsItsOwnPort: Debian's nginx (examples/nginx), one master with
// two workers, its own `listen` on the socket unit's address. A release
// rewrites the file nginx.conf includes; one nginx rejects is refused. Each
// master keeps its own pid file, and removes it when it exits.
func TestNginxBindsItsOwnPort(t *testing.T) {
	needProgram(t, "/usr/sbin/nginx", "nginx-light")
	dir := t.TempDir()
	pidFiles := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, "nginx*.pid"))
		return m
	}
	testOwnBind(t, ownBinder{
		name:  "nginx",
		count: 1,
		config: func(port int) string {
			conf := exampleConfig(t, "nginx/nginx.conf", "/srv/myapp", dir, "8080", strconv.Itoa(port))
			writeFile(t, filepath.Join(dir, "nginx.conf"), conf)
			return exampleConfig(t, "nginx/nginx.toml", "/srv/myapp", dir)
		},
		release: func(_ *app, v string) {
			writeFile(t, filepath.Join(dir, "release.conf"), "add_header X-Version "+v+" always;\n")
		},
		breakDeploy: func(*app) {
			writeFile(t, filepath.Join(dir, "release.conf"), "add_header X-Version;\n")
		},
		failure: `invalid number of arguments in "add_header" directive`,
		afterStop: func(m *testenv.Manager) {
			if left := pidFiles(); len(left) > 0 {
				t.Errorf("pid files left after stop: %v", left)
			}
			// One pid path for every generation would make each old
			// master remove its successor's file, and the successor
			// say so at its own exit.
			for line := range strings.SplitSeq(m.Log(), "\n") {
				if strings.Contains(line, "[alert]") {
					t.Errorf("nginx: %s", line)
				}
			}
		},
	})
}

// TestGoBindsItsOwnPort: a static Go server calling net.Listen
// (examples/gobind), two of them on the socket unit's address. A release
// changes its -version flag; a flag it does not know is refused.
func TestGoBindsItsOwnPort(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "gobind")
	build := exec.Command("go", "build", "-o", bin, "github.com/sockshim/sockshim/examples/gobind")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build gobind: %v\n%s", err, out)
	}
	checkStatic(t, bin)
	config := func(port int, version string, extra ...string) string {
		return exampleConfig(t, "gobind/gobind.toml", "/srv/myapp", dir, "8080", strconv.Itoa(port),
			`"-version", "v1"`, strings.Join(append([]string{`"-version"`, strconv.Quote(version)}, extra...), ", "))
	}
	testOwnBind(t, ownBinder{
		name:        "gobind",
		count:       2,
		config:      func(port int) string { return config(port, "v1") },
		release:     func(a *app, v string) { a.rewrite(t, config(a.port, v)) },
		breakDeploy: func(a *app) { a.rewrite(t, config(a.port, "broken", `"-tls-cert", "/etc/ssl/none.pem"`)) },
		failure:     "flag provided but not defined: -tls-cert",
		generation:  true,
	})
}

// checkStatic fails unless bin is an ELF executable without a program
// interpreter: nothing but the kernel loads it, so no LD_PRELOAD reaches it.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s has a PT_INTERP program header: it is not static", bin)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Fatalf("%s needs shared libraries %v (%v): it is not static", bin, libs, err)
	}
}
