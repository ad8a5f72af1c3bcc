package control

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
	"golang.org/x/sys/unix"
)

func TestReloadAndStatus(t *testing.T) {
	_, path, _ := serve(t, newHandler(false))
	var steps []string
	r, err := Call(path, Request{Command: "reload"}, func(s string) { steps = append(steps, s) })
	if err != nil || r.Message != "generation 2 serving" || len(steps) != 1 {
		t.Errorf("reload: %+v %v, progress %q", r, err, steps)
	}
	r, err = Call(path, Request{Command: "status"}, nil)
	if err != nil || r.Status == nil || r.Status.PID != os.Getpid() {
		t.Errorf("status: %+v %v", r, err)
	}
	if _, err := Call(path, Request{Command: "frobnicate"}, nil); err == nil || !strings.Contains(err.Error(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %v", err)
	}
}

// TestServeSurvivesEMFILE: running out of descriptors makes accept fail for
// a while; the control socket must come back once descriptors are free.
func TestServeSurvivesEMFILE(t *testing.T) {
	s, path, logs := listen(t)
	t.Cleanup(func() { closeWithin(t, s, 5*time.Second) })
	// Connections wait in the accept queue until Serve starts.
	for range 8 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := orig
	low.Cur = uint64(len(fds) + 2)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()
	go s.Serve(newHandler(false))
	waitFor(t, 5*time.Second, "accept to fail with EMFILE", func() bool {
		return strings.Contains(logs.String(), "too many open files")
	})
	time.Sleep(100 * time.Millisecond) // a few failed retries
	restore()
	if r, err := callWithin(t, path, Request{Command: "status"}, 5*time.Second); err != nil || r.Status == nil {
		t.Fatalf("status after EMFILE: %+v %v", r, err)
	}
	if n := strings.Count(logs.String(), "too many open files"); n != 1 || !strings.Contains(logs.String(), "control socket accepting again") {
		t.Errorf("EMFILE logged %d times, want once per burst, then the recovery:\n%s", n, logs)
	}
	t.Logf("log:\n%s", logs)
}

// TestCloseWithIdleConnection: a client that connects and says nothing does
// not hold up Close.
func TestCloseWithIdleConnection(t *testing.T) {
	s, path, _ := listen(t)
	go s.Serve(newHandler(false))
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond) // accepted and waiting for a request
	d := closeWithin(t, s, 3*time.Second)
	t.Logf("Close with an idle connection took %s", d)
	if d > time.Second {
		t.Errorf("Close took %s", d)
	}
}

// TestCloseCancelsReload: Close ends a conversation whose reload is still
// waiting; the handler's context says so.
func TestCloseCancelsReload(t *testing.T) {
	s, path, _ := listen(t)
	h := newHandler(true)
	go s.Serve(h)
	go Call(path, Request{Command: "reload"}, nil)
	<-h.started
	d := closeWithin(t, s, 3*time.Second)
	t.Logf("Close during a reload took %s", d)
	select {
	case <-h.canceled:
	case <-time.After(time.Second):
		t.Error("the reload's context was not canceled by Close")
	}
}

// TestClientGoneCancelsReload: a client that hangs up (systemctl reload
// timed out) ends its conversation.
func TestClientGoneCancelsReload(t *testing.T) {
	h := newHandler(true)
	_, path, _ := serve(t, h)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "{\"command\":\"reload\"}\n")
	<-h.started
	c.Close()
	select {
	case <-h.canceled:
	case <-time.After(2 * time.Second):
		t.Error("the reload's context was not canceled when its client went away")
	}
}

// TestConnectionCap: beyond the cap, a connection is told the supervisor is
// busy instead of waiting; once the others are gone, requests are served.
func TestConnectionCap(t *testing.T) {
	_, path, _ := serve(t, newHandler(false))
	var idle []net.Conn
	for range maxConns {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, "busy") {
		t.Errorf("connection %d over the cap: %q %v", maxConns+1, line, err)
	}
	for _, c := range idle {
		c.Close()
	}
	// The server notices the hang-ups a moment later.
	waitFor(t, 2*time.Second, "status to be served once the idle connections left", func() bool {
		_, err := callWithin(t, path, Request{Command: "status"}, 2*time.Second)
		return err == nil
	})
}

// TestRequestDeadline: a client that connects and says nothing is answered
// with an error and hung up on.
func TestRequestDeadline(t *testing.T) {
	s, path, _ := listen(t)
	s.requestTimeout = 100 * time.Millisecond
	go s.Serve(newHandler(false))
	t.Cleanup(func() { closeWithin(t, s, 5*time.Second) })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, "no request within 100ms") {
		t.Errorf("idle connection: %q %v", line, err)
	}
}

// hugeLineChild makes the test binary a control server that prints
// "ready" and serves until its stdin closes.
const hugeLineChild = "SOCKSHIM_TEST_CONTROL_SERVER"

func TestMain(m *testing.M) {
	if path := os.Getenv(hugeLineChild); path != "" {
		s, err := Listen(path, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go s.Serve(newHandler(false))
		fmt.Println("ready")
		os.Stdin.Read(make([]byte, 1))
		s.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHugeRequestLine: a request line without end is cut off at the limit,
// so the server's memory does not grow with it.
func TestHugeRequestLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl", "control.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), hugeLineChild+"="+path)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("server: %q %v", line, err)
	}
	before := memKiB(t, cmd.Process.Pid, "VmRSS")

	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 300 << 20
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = 'x'
	}
	sent := 0
	c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	for sent < size {
		n, err := c.Write(chunk)
		sent += n
		if err != nil {
			break
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	peak := memKiB(t, cmd.Process.Pid, "VmHWM")
	t.Logf("sent %d KiB of one line; server RSS %d KiB before, peak %d KiB; reply %q %v", sent>>10, before, peak, line, err)
	if !strings.Contains(line, "request longer than 64 KiB") {
		t.Errorf("reply to an overlong line: %q %v", line, err)
	}
	if peak-before > 32<<10 {
		t.Errorf("server's peak RSS grew by %d KiB", peak-before)
	}
}

// memKiB reads a Vm* line of /proc/PID/status.
func memKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestCallRefusesStranger: a server run by another user on the socket path
// is not trusted with the answer.
func TestCallRefusesStranger(t *testing.T) {
	path := filepath.Join(testenv.NobodyDir(t), "control.sock")
	testenv.FakeControlServer(t, path, nil)
	r, err := Call(path, Request{Command: "reload"}, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "uid 65534") {
		t.Errorf("reload answered by nobody's server: %+v %v", r, err)
	}
}

// TestListenNamesSquatter: a socket someone else answers on is named for
// what it is, and left alone.
func TestListenNamesSquatter(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("acting as another user needs root")
	}
	// nobody's socket in a directory of ours: bound here, handed to nobody,
	// who listens on it.
	path := filepath.Join(t.TempDir(), "control.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	bound := os.NewFile(uintptr(fd), path)
	defer bound.Close()
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	testenv.FakeControlServer(t, path, bound)
	_, err = Listen(path, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "uid 65534") || !strings.Contains(err.Error(), "python3") {
		t.Errorf("Listen over nobody's live socket: %v", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the squatter's socket was removed: %v", err)
	}
}

// TestListenDirectory: the socket's directory must be one only root or
// sockshim's user can write, and not a symlink.
func TestListenDirectory(t *testing.T) {
	base := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	mk := func(name string, mode os.FileMode) string {
		dir := filepath.Join(base, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, c := range []struct {
		dir  string
		want string // "" for success
	}{
		{mk("private", 0o700), ""},
		{mk("readable", 0o755), ""},
		{mk("world", 0o777), "writable by others"},
		{mk("sticky", 0o1777), "writable by others"},
		{mk("group", 0o770), "writable by others"},
	} {
		s, err := Listen(filepath.Join(c.dir, "c.sock"), log)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.dir, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error with %q", c.dir, err, c.want)
		}
		if s != nil {
			s.Close()
		}
	}

	target := mk("target", 0o700)
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if s, err := Listen(filepath.Join(link, "c.sock"), log); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("directory that is a symlink: %v", err)
		if s != nil {
			s.Close()
		}
	}

	created := filepath.Join(base, "new", "sub")
	s, err := Listen(filepath.Join(created, "c.sock"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Lstat(created)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("created directory: %v %v, want 0700", fi.Mode(), err)
	}

	if os.Getuid() == 0 {
		theirs := mk("theirs", 0o700)
		if err := os.Chown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(filepath.Join(theirs, "c.sock"), log); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
			t.Errorf("directory of another user: %v", err)
		}
	}
}
