package wsload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
)

// example runs the gateway example's programs the way sockshim would, but
// from the test: the test process binds the sockets and keeps them open for
// the whole test (connections queue there while no worker accepts), and
// passes them to each program with LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID
// and a NOTIFY_SOCKET of its own to learn when it is ready.
type example struct {
	t        *testing.T
	dir      string
	public   *os.File // tcp 127.0.0.1:random
	internal *os.File // unix socket in dir
	url      string
	version  string // file the business workers read their version from
}

func newExample(t *testing.T) *example {
	t.Helper()
	dir := t.TempDir()
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in, err := net.Listen("unix", filepath.Join(dir, "in.sock"))
	if err != nil {
		t.Fatal(err)
	}
	// The test's copy keeps the socket; its file must outlive the listener.
	in.(*net.UnixListener).SetUnlinkOnClose(false)
	e := &example{t: t, dir: dir, url: "ws://" + pub.Addr().String() + "/", version: filepath.Join(dir, "VERSION")}
	if e.public, err = pub.(*net.TCPListener).File(); err != nil {
		t.Fatal(err)
	}
	if e.internal, err = in.(*net.UnixListener).File(); err != nil {
		t.Fatal(err)
	}
	pub.Close()
	in.Close()
	t.Cleanup(func() { e.public.Close(); e.internal.Close() })
	return e
}

func (e *example) setVersion(v string) {
	if err := os.WriteFile(e.version, []byte(v+"\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

type proc struct {
	pid     int
	process *os.Process
	state   *os.ProcessState // once exited is closed
	stderr  *syncBuffer
	exited  chan struct{}
}

// rawFD returns f's descriptor without changing its blocking mode.
func rawFD(t *testing.T, f *os.File) uintptr {
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd uintptr
	rc.Control(func(d uintptr) { fd = d })
	return fd
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gateway starts the gateway with both sockets.
func (e *example) gateway(args ...string) *proc {
	return e.start("github.com/sockshim/sockshim/examples/gateway/gateway", args, "public", "internal")
}

// business starts a business worker on the internal socket, or with
// -websocket on both.
func (e *example) business(args ...string) *proc {
	names := []string{"internal"}
	if len(args) > 0 && args[0] == "-websocket" {
		names = []string{"public", "internal"}
	}
	return e.start("github.com/sockshim/sockshim/examples/gateway/business", append([]string{"-version-file", e.version}, args...), names...)
}

// start runs the program with the named sockets and waits for its READY=1.
func (e *example) start(pkg string, args []string, names ...string) *proc {
	t := e.t
	t.Helper()
	bin := testenv.Build(t, pkg)
	notifyPath := filepath.Join(e.dir, fmt.Sprintf("notify.%d", time.Now().UnixNano()))
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	// LISTEN_PID must be the program's pid: the shell sets it to its own,
	// then becomes the program. syscall.StartProcess takes raw descriptors:
	// exec.Cmd's ExtraFiles would call Fd() on each socket, which switches
	// the shared socket to blocking mode, under the feet of the workers
	// already accepting on it (an accept then blocks in the kernel, and
	// closing the listener no longer stops it).
	files := []uintptr{0, 0, 0}
	for _, n := range names {
		files = append(files, rawFD(t, map[string]*os.File{"public": e.public, "internal": e.internal}[n]))
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	files[1], files[2] = w.Fd(), w.Fd()
	env := append(os.Environ(), fmt.Sprint("LISTEN_FDS=", len(names)), "LISTEN_FDNAMES="+strings.Join(names, ":"), "NOTIFY_SOCKET="+notifyPath)
	pid, err := syscall.ForkExec("/bin/sh", append([]string{"sh", "-c", `export LISTEN_PID=$$; exec "$0" "$@"`, bin}, args...),
		&syscall.ProcAttr{Env: env, Files: files})
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	proc0, _ := os.FindProcess(pid)
	p := &proc{pid: pid, process: proc0, stderr: &syncBuffer{}, exited: make(chan struct{})}
	copied := make(chan struct{})
	go func() { io.Copy(p.stderr, r); r.Close(); close(copied) }()
	go func() { p.state, _ = proc0.Wait(); <-copied; close(p.exited) }()
	t.Cleanup(func() {
		proc0.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s (pid %d) log:\n%s", filepath.Base(bin), pid, p.stderr)
		}
	})
	notify.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	for {
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("%s: no READY=1: %v", filepath.Base(bin), err)
		}
		if bytes.Contains(buf[:n], []byte("READY=1")) {
			return p
		}
	}
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the program to exit and fails the test unless it exited 0.
func (p *proc) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		// A Go program prints its goroutines on SIGQUIT.
		p.process.Signal(syscall.SIGQUIT)
		select {
		case <-p.exited:
		case <-time.After(2 * time.Second):
		}
		t.Fatalf("pid %d still running after %s:\n%s", p.pid, timeout, p.stderr)
	}
	if !p.state.Success() {
		t.Fatalf("pid %d: %s\n%s", p.pid, p.state, p.stderr)
	}
}

// gatewayStats is part of what the gateway's GET /stats answers.
type gatewayStats struct {
	PID           int   `json:"pid"`
	ReloadSignals int64 `json:"reload_signals"`
	Clients       int   `json:"clients"`
	Messages      int64 `json:"messages"`
	Failed        int64 `json:"failed"`
	Redials       int64 `json:"backend_redials"`
	Resends       int64 `json:"resends"`
	Duplicates    int64 `json:"duplicates_dropped"`
}

func (e *example) stats(t *testing.T) gatewayStats {
	t.Helper()
	resp, err := http.Get("http" + strings.TrimPrefix(e.url, "ws") + "stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s gatewayStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// reload does what a sockshim reload of the business group does: start the
// new workers (each with the version now in the version file), wait until
// they are ready, then tell the old ones to drain; and what reload_signal
// does: SIGHUP to the gateway. It returns the new workers and the time the
// reload "returned" (the old workers have closed their listeners).
func (e *example) reload(gw *proc, old []*proc, version string, args ...string) ([]*proc, time.Time) {
	t := e.t
	t.Helper()
	e.setVersion(version)
	var next []*proc
	for range old {
		next = append(next, e.business(args...))
	}
	for _, p := range old {
		p.signal(t, syscall.SIGTERM)
	}
	// An old worker closes its listeners a moment after SIGTERM; sockshim
	// waits for that before the reload returns, and so does this.
	time.Sleep(20 * time.Millisecond)
	returned := time.Now()
	if gw != nil {
		gw.signal(t, syscall.SIGHUP)
	}
	for _, p := range old {
		p.wait(t, 15*time.Second)
	}
	return next, returned
}
