package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// bins are the binaries every test uses, built once per test process.
type bins struct {
	sockshim, testworker string
}

func build(t testing.TB) bins {
	t.Helper()
	return bins{
		sockshim:   testenv.Build(t, "github.com/sockshim/sockshim/cmd/sockshim"),
		testworker: testenv.Build(t, "github.com/sockshim/sockshim/testenv/testworker"),
	}
}

// app is one sockshim instance under test: socket-activated by a user
// manager (installApp) or binding its own listener (startStandalone).
type app struct {
	b       bins
	name    string
	port    int
	url     string
	ctl     string // control socket
	cfgPath string
	fdDir   string // where testworkers started with -report FDDIR write
	listen  string // the config's [[listen]] block; empty under systemd

	m   *testenv.Manager // socket-activated only
	sup *supervisor      // standalone only
	up  *upstream        // standalone only: what sockshim told its manager
}

// newApp picks a loopback port and the files of an app; it starts nothing.
func newApp(t testing.TB, b bins, name string) *app {
	t.Helper()
	dir := t.TempDir()
	port := testenv.FreePort(t)
	a := &app{b: b, name: name, port: port, url: fmt.Sprintf("http://127.0.0.1:%d/", port),
		ctl: filepath.Join(dir, "control.sock"), cfgPath: filepath.Join(dir, "app.toml"), fdDir: filepath.Join(dir, "fds")}
	if err := os.Mkdir(a.fdDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return a
}

// rewrite replaces the app's config atomically, as a deploy tool would:
// workers is the [[worker]] part, the rest stays the same. FDDIR in it
// stands for the app's fdDir.
func (a *app) rewrite(t testing.TB, workers string) {
	t.Helper()
	tmp := a.cfgPath + ".new"
	text := a.listen + strings.ReplaceAll(workers, "FDDIR", a.fdDir) + fmt.Sprintf("\n[control]\nsocket = %q\n", a.ctl)
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, a.cfgPath); err != nil {
		t.Fatal(err)
	}
}

// startStandalone runs sockshim without systemd: it binds a loopback
// listener named "http" itself, runs the given [[worker]] blocks, and
// reports to a notify socket the test reads.
func startStandalone(t testing.TB, b bins, workers string, env ...string) *app {
	t.Helper()
	a := newApp(t, b, "standalone")
	a.listen = fmt.Sprintf("[[listen]]\nname = \"http\"\naddress = \"tcp://127.0.0.1:%d\"\n", a.port)
	a.rewrite(t, workers)
	a.up = newUpstream(t)
	a.sup = startSupervisor(t, b, a.cfgPath, append(env, "NOTIFY_SOCKET="+a.up.path)...)
	return a
}

// startServing is startStandalone that returns once sockshim has told its
// manager READY=1.
func startServing(t *testing.T, b bins, workers string, env ...string) *app {
	t.Helper()
	a := startStandalone(t, b, workers, env...)
	a.up.await(t, "READY=1", a.upWithin(t))
	return a
}

// upWithin is how long sockshim may take to bring up the first generation
// of the app's config: its longest ready_timeout, plus a margin for starting
// sockshim and the workers. A test that waits less fails where sockshim does
// not: on a busy CI machine gunicorn once took 5 s to its READY=1.
func (a *app) upWithin(t testing.TB) time.Duration {
	t.Helper()
	cfg, err := config.Load(a.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var longest time.Duration
	for _, w := range cfg.Workers {
		longest = max(longest, w.ReadyTimeout)
	}
	return longest + 10*time.Second
}

// reload runs `sockshim reload -c` and returns what it printed.
func (a *app) reload() (string, error) {
	out, err := exec.Command(a.b.sockshim, "reload", "-c", a.cfgPath).CombinedOutput()
	return string(out), err
}

// deploy does what a deploy tool does: writes the new [[worker]] part, then
// runs `sockshim reload`.
func (a *app) deploy(t testing.TB, workers string) (string, error) {
	t.Helper()
	a.rewrite(t, workers)
	return a.reload()
}

// mustDeploy is deploy that fails the test when the reload fails.
func (a *app) mustDeploy(t testing.TB, workers string) string {
	t.Helper()
	out, err := a.deploy(t, workers)
	if err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	return out
}

// toml quotes a Go string list as a TOML array.
func tomlList(items ...string) string {
	q := make([]string, len(items))
	for i, s := range items {
		b, _ := json.Marshal(s)
		q[i] = string(b)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// answer is what the testworker says about itself.
type answer struct {
	version, generation, worker, pid string
}

func get(t testing.TB, url string) answer {
	t.Helper()
	return getWithin(t, url, 5*time.Second)
}

// getWithin is get with a timeout for the whole request.
func getWithin(t testing.TB, url string, timeout time.Duration) answer {
	t.Helper()
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	return answer{resp.Header.Get("X-Version"), resp.Header.Get("X-Generation"), resp.Header.Get("X-Worker"), resp.Header.Get("X-Pid")}
}

// status asks a running supervisor for its state over the control socket.
func status(t testing.TB, sock string) *control.Status {
	t.Helper()
	r, err := control.Call(sock, control.Request{Command: "status"}, nil)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return r.Status
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// workerPIDs lists the pids of workers in the given state.
func workerPIDs(st *control.Status, state string) []int {
	var pids []int
	for _, g := range st.Groups {
		for _, w := range g.Workers {
			if state == "" || w.State == state {
				pids = append(pids, w.PID)
			}
		}
	}
	return pids
}

// upstream is a stand-in service manager: a notify socket that records every
// datagram sockshim sends, for standalone runs.
type upstream struct {
	conn *net.UnixConn
	path string
	msgs chan string
}

func newUpstream(t testing.TB) *upstream {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{conn: conn, path: path, msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 8192)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(u.msgs)
				return
			}
			u.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return u
}

// await returns the first datagram containing want, failing after timeout.
func (u *upstream) await(t testing.TB, want string, timeout time.Duration) string {
	t.Helper()
	msgs := u.collect(t, want, timeout)
	return msgs[len(msgs)-1]
}

// collect returns every datagram up to and including the first one that
// contains want, failing after timeout.
func (u *upstream) collect(t testing.TB, want string, timeout time.Duration) []string {
	t.Helper()
	deadline := time.After(timeout)
	var msgs []string
	for {
		select {
		case m, ok := <-u.msgs:
			if !ok {
				t.Fatalf("notify socket closed while waiting for %q", want)
			}
			msgs = append(msgs, m)
			if strings.Contains(m, want) {
				return msgs
			}
		case <-deadline:
			t.Fatalf("no %q on the notify socket within %s; got %q", want, timeout, msgs)
		}
	}
}

// supervisor is a sockshim started directly by the test (no systemd).
type supervisor struct {
	cmd     *exec.Cmd
	done    chan error
	log     *syncBuffer
	logDone chan struct{} // closed once every holder of sockshim's stdout is gone
}

// syncBuffer collects sockshim's output while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b.WriteString(line + "\n")
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startSupervisor runs `sockshim run -c cfg`, or `sockshim run` on its
// embedded default when cfg is "".
func startSupervisor(t testing.TB, b bins, cfg string, env ...string) *supervisor {
	t.Helper()
	args := []string{"run"}
	if cfg != "" {
		args = append(args, "-c", cfg)
	}
	cmd := exec.Command(b.sockshim, args...)
	cmd.Env = append(os.Environ(), env...)
	return superviseCmd(t, cmd)
}

// superviseCmd starts a `sockshim run` command the caller prepared (its
// own environment or credentials), collects its output, and kills it at
// cleanup if it is still running.
func superviseCmd(t testing.TB, cmd *exec.Cmd) *supervisor {
	t.Helper()
	// A real pipe, not an io.Writer: workers inherit sockshim's stdout, and
	// cmd.Wait would otherwise wait for them to close it too.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	s := &supervisor{cmd: cmd, done: make(chan error, 1), log: &syncBuffer{}, logDone: make(chan struct{})}
	go func() {
		defer close(s.logDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			s.log.add(sc.Text())
		}
		// Keep reading whatever comes after an overlong line, so that
		// sockshim never blocks writing its log.
		io.Copy(io.Discard, pr)
	}()
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		t.Fatal(err)
	}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-s.done:
			s.done <- err
		default:
			cmd.Process.Kill()
			<-s.done
		}
		out := s.output()
		pr.Close()
		if t.Failed() {
			t.Logf("sockshim output:\n%s", out)
		}
	})
	return s
}

// output returns what sockshim and its workers wrote, waiting a bounded time
// for the last writer (workers may outlive sockshim by a moment) to go.
func (s *supervisor) output() string {
	select {
	case <-s.logDone:
	case <-time.After(5 * time.Second):
	}
	return s.log.String()
}

// awaitLog waits until sockshim's output contains want: a line is read a
// moment after it is written.
func (s *supervisor) awaitLog(t *testing.T, want string) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%q in sockshim's log", want), func() bool {
		return strings.Contains(s.log.String(), want)
	})
}

func (s *supervisor) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// forceStop is an operator's double Ctrl-C: the second SIGINT kills the
// workers at once, without waiting for drain_timeout, and sockshim exits 0.
func (s *supervisor) forceStop(t *testing.T) {
	t.Helper()
	s.signal(t, syscall.SIGINT)
	time.Sleep(100 * time.Millisecond)
	s.signal(t, syscall.SIGINT)
	if err := s.wait(t, 10*time.Second); err != nil {
		t.Errorf("sockshim exit after a forced stop: %v", err)
	}
}

// wait returns sockshim's exit error, failing after timeout.
func (s *supervisor) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("sockshim did not exit within %s", timeout)
		return nil
	}
}

// underLoad runs act while the load client drives o against the server, and
// returns what the load saw. The load starts 300 ms before act and runs
// 300 ms after it, so the moments around each step are covered. Failures are
// the caller's to judge: a comparison run reports them, a sockshim run
// asserts there are none.
func underLoad(tb testing.TB, o load.Options, act func()) *load.Result {
	tb.Helper()
	if o.Duration == 0 && o.MaxRequests == 0 {
		o.Duration = time.Hour // ended by act returning
	}
	ctx, stop := context.WithCancel(context.Background())
	var res *load.Result
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, err = load.Run(ctx, o)
	}()
	// Stop the load even when act ends the test with t.Fatal.
	defer func() {
		stop()
		<-done
	}()
	time.Sleep(300 * time.Millisecond)
	act()
	time.Sleep(300 * time.Millisecond)
	stop()
	<-done
	if err != nil {
		tb.Fatalf("load client: %v", err)
	}
	if res.Requests == 0 {
		tb.Fatalf("the load client sent nothing to %s", o.URL)
	}
	return res
}
