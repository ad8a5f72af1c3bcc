package intercept

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/handoff/trampoline"
	"github.com/sockshim/sockshim/handoff/wire"
	"github.com/sockshim/sockshim/testenv"
	"golang.org/x/sys/unix"
)

// These tests start real workers through the real trampoline
// (sockshim-handoff) with the bind filter, and answer their calls with
// Serve, as the supervisor does. The worker is this test binary in the
// helper mode helperEnv names.

const (
	helperEnv = "INTERCEPT_TEST_HELPER" // binds, or spawn (runs binds in a child)
	bindsEnv  = "INTERCEPT_TEST_BINDS"  // "NETWORK ADDRESS|…"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(testenv.Run(m))
	case "binds":
		os.Exit(helperBinds())
	case "spawn":
		os.Exit(helperSpawn())
	}
	os.Exit(3)
}

// result is what the helper reports of one bind (and listen).
type result struct {
	Spec     string
	Bind     string // the error, or ""
	Listen   string
	Ino      uint64
	Port     int
	Cloexec  bool
	Nonblock bool
}

// helperBinds binds every address in bindsEnv, each on a socket of its
// own, reports each as a JSON line on stdout, and keeps the sockets until
// stdin closes.
func helperBinds() int {
	enc := json.NewEncoder(os.Stdout)
	for spec := range strings.SplitSeq(os.Getenv(bindsEnv), "|") {
		r := result{Spec: spec}
		network, addr, _ := strings.Cut(spec, " ")
		if n, ok := strings.CutSuffix(network, "-unlink"); ok {
			// A stale-socket cleanup, as many servers do before they bind.
			network = n
			os.Remove(addr)
		}
		fd, sa, typ, err := helperSocket(network, addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, spec+":", err)
			return 4
		}
		if err := unix.Bind(fd, sa); err != nil {
			r.Bind = err.Error()
		} else if typ == unix.SOCK_STREAM {
			if err := unix.Listen(fd, 1); err != nil {
				r.Listen = err.Error()
			}
		}
		var st unix.Stat_t
		unix.Fstat(fd, &st)
		r.Ino = st.Ino
		switch got := must(unix.Getsockname(fd)).(type) {
		case *unix.SockaddrInet4:
			r.Port = got.Port
		case *unix.SockaddrInet6:
			r.Port = got.Port
		}
		fdfl := must(unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0))
		fl := must(unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0))
		r.Cloexec, r.Nonblock = fdfl&unix.FD_CLOEXEC != 0, fl&unix.O_NONBLOCK != 0
		enc.Encode(r)
	}
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func must[T any](v T, _ error) T { return v }

// helperSocket makes a socket for network ("tcp4", "tcp6", "udp4",
// "unix"; "tcp4-blocking" without SOCK_NONBLOCK) and the address to bind.
func helperSocket(network, addr string) (fd int, sa unix.Sockaddr, typ int, err error) {
	flags := unix.SOCK_CLOEXEC | unix.SOCK_NONBLOCK
	if n, ok := strings.CutSuffix(network, "-blocking"); ok {
		network, flags = n, unix.SOCK_CLOEXEC
	}
	family, typ := unix.AF_INET, unix.SOCK_STREAM
	switch network {
	case "tcp4":
	case "udp4":
		typ = unix.SOCK_DGRAM
	case "tcp6":
		family = unix.AF_INET6
	case "unix":
		family = unix.AF_UNIX
		sa = &unix.SockaddrUnix{Name: addr}
	default:
		return 0, nil, 0, fmt.Errorf("unknown network %q", network)
	}
	if sa == nil {
		ap, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			return 0, nil, 0, err
		}
		if family == unix.AF_INET {
			sa = &unix.SockaddrInet4{Port: ap.Port, Addr: [4]byte(ap.IP.To4())}
		} else {
			sa = &unix.SockaddrInet6{Port: ap.Port, Addr: [16]byte(ap.IP.To16())}
		}
	}
	fd, err = unix.Socket(family, typ|flags, 0)
	return fd, sa, typ, err
}

// helperSpawn runs the binds in a child process and waits for it, so that
// the child's calls come through the filter it inherited.
func helperSpawn() int {
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"=binds")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 5
	}
	return 0
}

// heldSockets holds real sockets: a TCP listener with a backlog of 64 on
// 127.0.0.1, a UDP socket, a TCP listener on ::1 and a unix listener in
// dir, as sockshim's [[listen]] does.
func heldSockets(t *testing.T, dir string) []Held {
	t.Helper()
	var socks []handoff.Socket
	add := func(name string, fd int) {
		socks = append(socks, handoff.Socket{Name: name, File: os.NewFile(uintptr(fd), name)})
	}
	listen := func(family int, sa unix.Sockaddr) int {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err == nil {
			err = unix.Bind(fd, sa)
		}
		if err == nil {
			err = unix.Listen(fd, 64)
		}
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	add("http", listen(unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err == nil {
		err = unix.Bind(udp, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	}
	if err != nil {
		t.Fatal(err)
	}
	add("dns", udp)
	add("http6", listen(unix.AF_INET6, &unix.SockaddrInet6{Addr: [16]byte{15: 1}}))
	add("local", listen(unix.AF_UNIX, &unix.SockaddrUnix{Name: filepath.Join(dir, "s.sock")}))
	held, err := Describe(socks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, h := range held {
			h.File.Close()
		}
	})
	return held
}

// worker is one helper started through the trampoline with the filter.
type worker struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	results *bufio.Scanner
	log     *syncBuffer
	served  chan struct{} // closed when Serve returned
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startWorker starts the helper in mode with binds, as cred (nil: root),
// in dir, and serves its calls with held; serve, when not nil, replaces
// Serve with what the test does with the listener.
func startWorker(t *testing.T, mode string, binds []string, held []Held, cred *syscall.Credential, dir string, serve func(*os.File)) *worker {
	t.Helper()
	tramp := testenv.Build(t, "github.com/sockshim/sockshim/cmd/sockshim-handoff")
	self := helperBinary(t)
	parent, child, err := handoff.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	env := append(os.Environ(), helperEnv+"="+mode, bindsEnv+"="+strings.Join(binds, "|"))
	args, env := trampoline.Args([]string{self}, env)
	w := &worker{log: &syncBuffer{}, served: make(chan struct{})}
	w.cmd = &exec.Cmd{
		Path:        tramp,
		Args:        append([]string{"sockshim-handoff"}, args...),
		Env:         env,
		Dir:         dir,
		Stderr:      os.Stderr,
		ExtraFiles:  []*os.File{child},
		SysProcAttr: &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL},
	}
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	w.results = bufio.NewScanner(out)
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	t.Cleanup(func() {
		w.stdin.Close()
		w.cmd.Process.Kill()
		w.cmd.Wait()
	})
	if err := handoff.Send(parent, wire.FlagInterceptBind, nil); err != nil {
		t.Fatal(err)
	}
	got, _, err := handoff.Receive(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != wire.ListenerName {
		t.Fatalf("the trampoline answered %v, want one %s", got, wire.ListenerName)
	}
	if serve == nil {
		srv := NewServer("test[0]", held, slog.New(slog.NewTextHandler(w.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
		serve = srv.Serve
	}
	go func() {
		defer close(w.served)
		serve(got[0].File)
	}()
	return w
}

// next returns the helper's report of its next bind.
func (w *worker) next(t *testing.T) result {
	t.Helper()
	if !w.results.Scan() {
		t.Fatalf("the helper ended before its report: %v\nServe's log:\n%s", w.results.Err(), w.log)
	}
	var r result
	if err := json.Unmarshal(w.results.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// stop closes the helper's stdin, waits for it and for Serve, which must
// return once no process has the filter any more.
func (w *worker) stop(t *testing.T) {
	t.Helper()
	w.stdin.Close()
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	select {
	case <-w.served:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10 s of the worker's exit")
	}
}

var helperOnce struct {
	sync.Once
	path string
	err  error
}

// helperBinary is this test binary where other users may run it.
func helperBinary(t *testing.T) string {
	t.Helper()
	helperOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			helperOnce.err = err
			return
		}
		b, err := os.ReadFile(self)
		if err != nil {
			helperOnce.err = err
			return
		}
		helperOnce.path = filepath.Join(testenv.Scratch(t), "intercept-helper")
		helperOnce.err = os.WriteFile(helperOnce.path, b, 0o755)
	})
	if helperOnce.err != nil {
		t.Fatal(helperOnce.err)
	}
	return helperOnce.path
}

func heldNamed(t *testing.T, held []Held, name string) Held {
	t.Helper()
	i := slices.IndexFunc(held, func(h Held) bool { return h.Name == name })
	if i < 0 {
		t.Fatalf("no held socket %s", name)
	}
	return held[i]
}

// backlog is the listen backlog of the TCP listener on addr, as ss(8)
// shows it (Send-Q of a listening socket).
func backlog(t *testing.T, addr netip.AddrPort) int {
	t.Helper()
	out, err := exec.Command("ss", "-Hltn", "sport = :"+strconv.Itoa(int(addr.Port()))).Output()
	if err != nil {
		t.Fatalf("ss (iproute2, which scripts/test.sh installs): %v", err)
	}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) >= 4 && f[3] == addr.String() {
			n, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("ss shows no listener on %s: %q", addr, out)
	return 0
}

func TestServeGivesHeldSockets(t *testing.T) {
	for _, c := range []struct {
		name string
		mode string
		cred *syscall.Credential
	}{
		{"worker", "binds", nil},
		{"worker's child", "spawn", nil},
		{"worker as nobody", "binds", &syscall.Credential{Uid: 65534, Gid: 65534}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := workDir(t)
			held := heldSockets(t, dir)
			http, dns, http6 := heldNamed(t, held, "http"), heldNamed(t, held, "dns"), heldNamed(t, held, "http6")
			local := heldNamed(t, held, "local")
			// Not the group's: a bind of its address must not get it.
			other, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			p := http.Endpoint.Addr.Port()
			binds := []string{
				"tcp4 " + http.Endpoint.Addr.String(),
				"udp4 " + dns.Endpoint.Addr.String(),
				"tcp6 " + http6.Endpoint.Addr.String(),
				"unix s.sock", // relative to the worker's directory
				"tcp4 127.0.0.1:0",
				fmt.Sprintf("tcp4 127.0.0.2:%d", p), // almost right: logged once …
				fmt.Sprintf("tcp4 127.0.0.2:%d", p), // … not twice
				"tcp4 " + other.Addr().String(),
				"tcp4-blocking " + http.Endpoint.Addr.String(),
			}
			before := backlog(t, http.Endpoint.Addr)
			w := startWorker(t, c.mode, binds, held, c.cred, dir, nil)
			for _, want := range []Held{http, dns, http6, local} {
				r := w.next(t)
				if r.Bind != "" || r.Listen != "" || r.Ino != want.Ino {
					t.Errorf("%s: bind %q, listen %q, inode %d; want the held socket %s (inode %d)", r.Spec, r.Bind, r.Listen, r.Ino, want.Name, want.Ino)
				}
				if !r.Cloexec {
					t.Errorf("%s: close-on-exec was lost", r.Spec)
				}
			}
			if r := w.next(t); r.Bind != "" || r.Port == 0 || isHeld(held, r.Ino) {
				t.Errorf("%s: bind %q, port %d, held %v; want a port of its own", r.Spec, r.Bind, r.Port, isHeld(held, r.Ino))
			}
			if r := w.next(t); r.Bind != "" || isHeld(held, r.Ino) {
				t.Errorf("%s: bind %q, held %v; want a socket of its own", r.Spec, r.Bind, isHeld(held, r.Ino))
			}
			// The worker's own socket of the first near miss has the address.
			if r := w.next(t); r.Bind != "address already in use" || isHeld(held, r.Ino) {
				t.Errorf("%s: bind %q, held %v; want EADDRINUSE, its own socket", r.Spec, r.Bind, isHeld(held, r.Ino))
			}
			if r := w.next(t); r.Bind != "address already in use" || isHeld(held, r.Ino) {
				t.Errorf("%s (a socket not of the group): bind %q; want EADDRINUSE, its own socket", r.Spec, r.Bind)
			}
			r := w.next(t)
			if r.Bind != "" || r.Ino != http.Ino || r.Nonblock {
				t.Errorf("%s: bind %q, inode %d, non-blocking %v; want the held socket, in blocking mode like the worker's own", r.Spec, r.Bind, r.Ino, r.Nonblock)
			}
			if after := backlog(t, http.Endpoint.Addr); after != before || after != 64 {
				t.Errorf("held backlog %d before and %d after the worker's listen(fd, 1), want 64\n%s", before, after, w.log)
			}
			if n := strings.Count(w.log.String(), "does not hold, on the port of one it does"); n != 1 {
				t.Errorf("%d near-miss lines, want 1:\n%s", n, w.log)
			}
			w.stop(t)
			if n := strings.Count(w.log.String(), "bind answered with a held socket"); n != 5 {
				t.Errorf("%d binds answered with a held socket, want 5:\n%s", n, w.log)
			}
		})
	}
}

// workDir is a directory for the worker that every user may enter.
func workDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(testenv.Scratch(t), "worker-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func isHeld(held []Held, ino uint64) bool {
	return slices.ContainsFunc(held, func(h Held) bool { return h.Ino == ino })
}

// TestNoBindHangsWithoutSockshim: when nobody answers the filter any more
// (sockshim died: its listener is closed), a bind that was waiting and
// every later one fail with ENOSYS instead of waiting forever.
func TestNoBindHangsWithoutSockshim(t *testing.T) {
	dir := workDir(t)
	held := heldSockets(t, dir)
	addr := heldNamed(t, held, "http").Endpoint.Addr.String()
	w := startWorker(t, "binds", []string{"tcp4 " + addr, "tcp4 " + addr}, held, nil, dir, func(l *os.File) {
		// Wait until the first bind waits, then die as sockshim would.
		rc, _ := l.SyscallConn()
		rc.Control(func(fd uintptr) {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			unix.Poll(p, 10_000)
		})
		l.Close()
	})
	for range 2 {
		if r := w.next(t); r.Bind != "function not implemented" {
			t.Errorf("%s: bind %q, want ENOSYS", r.Spec, r.Bind)
		}
	}
	w.stop(t)
}

// TestRemovedSocketFileReported: a server that removes its unix socket's
// file before it binds removes the held socket's name; it still gets the
// socket, and the log says what happened and what to do.
func TestRemovedSocketFileReported(t *testing.T) {
	dir := workDir(t)
	held := heldSockets(t, dir)
	local := heldNamed(t, held, "local")
	w := startWorker(t, "binds", []string{"unix-unlink s.sock"}, held, nil, dir, nil)
	if r := w.next(t); r.Bind != "" || r.Ino != local.Ino {
		t.Errorf("%s: bind %q, inode %d; want the held socket (inode %d)", r.Spec, r.Bind, r.Ino, local.Ino)
	}
	w.stop(t)
	if !strings.Contains(w.log.String(), "the worker removed or replaced the held socket's file before its bind") {
		t.Errorf("no report of the removed socket file:\n%s", w.log)
	}
}

// TestServeLeaksNothing: a worker's whole life through Serve leaves the
// supervisor with the descriptors it had.
func TestServeLeaksNothing(t *testing.T) {
	dir := workDir(t)
	held := heldSockets(t, dir)
	addr := heldNamed(t, held, "http").Endpoint.Addr.String()
	count := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := count()
	for range 3 {
		w := startWorker(t, "binds", []string{"tcp4 " + addr}, held, nil, dir, nil)
		w.next(t)
		w.stop(t)
	}
	if after := count(); after != before {
		t.Errorf("%d descriptors open after 3 workers, %d before", after, before)
	}
}
