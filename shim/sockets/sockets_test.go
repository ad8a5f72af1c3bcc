package sockets

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sockshim/sockshim/shim/config"
	"golang.org/x/sys/unix"
)

// inheritChild is the environment variable that turns the test binary into
// a process that calls Inherit on what it was started with and prints the
// outcome as JSON: the real-process fixture for socket activation.
const inheritChild = "SOCKSHIM_TEST_INHERIT_CHILD"

type inheritResult struct {
	Names []string `json:"names"`
	Err   string   `json:"err"`
	Env   []string `json:"env"` // LISTEN_* left in the environment afterwards
}

func TestMain(m *testing.M) {
	if os.Getenv(inheritChild) != "" {
		socks, err := Inherit()
		var r inheritResult
		for _, s := range socks {
			r.Names = append(r.Names, s.Name)
		}
		if err != nil {
			r.Err = err.Error()
		}
		for _, kv := range os.Environ() {
			if strings.HasPrefix(kv, "LISTEN_") {
				r.Env = append(r.Env, kv)
			}
		}
		json.NewEncoder(os.Stdout).Encode(r)
		os.Exit(0)
	}
	if n, err := strconv.Atoi(os.Getenv(shutdownChild)); err == nil {
		shutdownInherited(n)
	}
	os.Exit(m.Run())
}

// listens parses [[listen]] entries the way a config file would give them.
func listens(t *testing.T, entries ...string) []config.Listen {
	t.Helper()
	text := ""
	for i, addr := range entries {
		text += fmt.Sprintf("[[listen]]\nname = \"s%d\"\naddress = %q\n", i, addr)
	}
	cfg, err := config.Parse("test.toml", []byte(text+"[[worker]]\ncommand = [\"/bin/true\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Listen
}

// fdFlags returns the file status and descriptor flags without Fd(), which
// would change the socket's mode.
func fdFlags(t *testing.T, f *os.File) (status, fd int) {
	t.Helper()
	raw, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(d uintptr) {
		status, _ = unix.FcntlInt(d, unix.F_GETFL, 0)
		fd, _ = unix.FcntlInt(d, unix.F_GETFD, 0)
	})
	return status, fd
}

// localAddr is the bound address, for a client to reach a port-0 listener.
func localAddr(t *testing.T, f *os.File) unix.Sockaddr {
	t.Helper()
	raw, _ := f.SyscallConn()
	var sa unix.Sockaddr
	var err error
	raw.Control(func(d uintptr) { sa, err = unix.Getsockname(int(d)) })
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

func TestBindKinds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	socks, err := Bind(listens(t, "tcp://127.0.0.1:0", "tcp://[::1]:0", "udp://127.0.0.1:0", "unix:"+path))
	if err != nil {
		t.Fatal(err)
	}
	defer Close(socks)
	for _, s := range socks {
		// What systemd hands over: blocking, and not leaked by exec.
		status, fd := fdFlags(t, s.File)
		if status&unix.O_NONBLOCK != 0 {
			t.Errorf("%s is non-blocking", s.Name)
		}
		if fd&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s lacks close-on-exec", s.Name)
		}
	}
	for i, network := range []string{"tcp4", "tcp6"} {
		if err := dialable(t, network, socks[i].File); err != nil {
			t.Errorf("%s: %v", network, err)
		}
	}
	if sa, ok := localAddr(t, socks[2].File).(*unix.SockaddrInet4); !ok || sa.Port == 0 {
		t.Errorf("udp socket bound to %v", localAddr(t, socks[2].File))
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("unix socket file: %v %v, want a socket with mode 0660", fi.Mode(), err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("unix: %v", err)
	}
	c.Close()
}

func TestBindUnixStaleAndLive(t *testing.T) {
	dir := t.TempDir()
	// A socket file nobody listens on any more is replaced.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	socks, err := Bind(listens(t, "unix:"+stale))
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	Close(socks)

	// A live one belongs to someone else: never steal it.
	live := filepath.Join(dir, "live.sock")
	ln, err = net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := Bind(listens(t, "unix:"+live)); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("binding over a live socket: %v", err)
	}

	// Something that is not a socket is not ours to remove.
	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, []byte("data"), 0o644)
	if _, err := Bind(listens(t, "unix:"+file)); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("binding over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "data" {
		t.Errorf("the regular file was touched")
	}
}

// A failure half-way closes what was already opened, and names the entry.
func TestBindClosesOnError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	before := openFDs(t)
	_, err = Bind(listens(t, "tcp://127.0.0.1:0", "unix:"+filepath.Join(t.TempDir(), "ok.sock"), "tcp://"+busy.Addr().String()))
	if err == nil || !strings.Contains(err.Error(), `listen "s2" (tcp://`+busy.Addr().String()+`)`) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %v does not name the busy entry", err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after the failed Bind, %d before", after, before)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// runInherit starts the test binary as a socket-activated child with the
// given LISTEN_* (LISTEN_PID=self means the child's own pid, set by a shell
// that then execs it, as systemd sets it between fork and exec) and n
// listening sockets at fds 3….
func runInherit(t *testing.T, n int, env ...string) inheritResult {
	t.Helper()
	var files []*os.File
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	script := `exec "$0"`
	childEnv := append(os.Environ(), inheritChild+"=1")
	for _, kv := range env {
		if kv == "LISTEN_PID=self" {
			script = `LISTEN_PID=$$; export LISTEN_PID; exec "$0"`
		} else {
			childEnv = append(childEnv, kv)
		}
	}
	cmd := exec.Command("/bin/sh", "-c", script, os.Args[0])
	cmd.Env = childEnv
	cmd.ExtraFiles = files
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("inherit child: %v", err)
	}
	var r inheritResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("inherit child said %q: %v", out, err)
	}
	return r
}

func TestInherit(t *testing.T) {
	for _, c := range []struct {
		name  string
		n     int
		env   []string
		names []string
		err   string
	}{
		{"named", 2, []string{"LISTEN_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=http:admin"}, []string{"http", "admin"}, ""},
		{"unnamed", 1, []string{"LISTEN_PID=self", "LISTEN_FDS=1"}, []string{"unknown"}, ""},
		{"none", 0, nil, nil, ""},
		{"other pid", 1, []string{"LISTEN_PID=1", "LISTEN_FDS=1"}, nil, "was passed for LISTEN_PID=\"1\", not for sockshim's pid"},
		{"names mismatch", 2, []string{"LISTEN_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=http"}, nil, `LISTEN_FDNAMES="http" names 1 sockets, LISTEN_FDS=2`},
		{"garbage count", 1, []string{"LISTEN_PID=self", "LISTEN_FDS=two"}, nil, `LISTEN_FDS="two" is not a count`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runInherit(t, c.n, c.env...)
			if strings.Join(r.Names, ",") != strings.Join(c.names, ",") {
				t.Errorf("names %q, want %q", r.Names, c.names)
			}
			if c.err == "" && r.Err != "" || !strings.Contains(r.Err, c.err) {
				t.Errorf("error %q, want one containing %q", r.Err, c.err)
			}
			// Nothing started later may see the variables, whatever happened.
			if len(r.Env) > 0 {
				t.Errorf("LISTEN_* left in the environment: %v", r.Env)
			}
		})
	}
}

// TestCheckSocket: what LISTEN_FDS promises is checked descriptor by
// descriptor, so a file or a closed number is named instead of being handed
// to workers as a socket.
func TestCheckSocket(t *testing.T) {
	f, err := os.Open("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := checkSocket(int(f.Fd())); err == nil || !strings.Contains(err.Error(), "is not a socket but /proc/") {
		t.Errorf("a regular file: %v", err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	if err := checkSocket(fds[0]); err != nil {
		t.Errorf("a socket: %v", err)
	}
	unix.Close(fds[0])
	if err := checkSocket(fds[0]); err == nil || !strings.Contains(err.Error(), "bad file descriptor") {
		t.Errorf("a closed descriptor: %v", err)
	}
}
