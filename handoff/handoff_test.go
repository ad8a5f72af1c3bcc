package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/handoff/trampoline"
	"github.com/sockshim/sockshim/handoff/wire"
	"github.com/sockshim/sockshim/internal/procfs"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the trampoline, the way sockshim runs it: from
// an init, on the main thread.
func init() {
	if len(os.Args) > 1 && os.Args[1] == TrampolineArg {
		Main(os.Args[2:])
	}
}

func TestMain(m *testing.M) {
	raiseNoFile()
	os.Exit(m.Run())
}

// raiseNoFile lifts the soft fd limit to the hard one: the 1000-socket case
// holds about 3000 descriptors at its peak.
func raiseNoFile() {
	var l unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &l) == nil {
		l.Cur = l.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &l)
	}
}

// openFDs counts this process's descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // ReadDir's own descriptor
}

// sockets makes n real sockets (one end of a socketpair each, the other
// closed) named s0, s1, …
func sockets(t *testing.T, n int) []Socket {
	t.Helper()
	socks := make([]Socket, n)
	for i := range socks {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		socks[i] = Socket{Name: "s" + strconv.Itoa(i), File: os.NewFile(uintptr(fd), "s"+strconv.Itoa(i))}
	}
	t.Cleanup(func() { closeAll(socks) })
	return socks
}

func closeAll(socks []Socket) {
	for _, s := range socks {
		s.File.Close()
	}
}

func inode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func pair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	a, b, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 253, 254, 1000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			socks := sockets(t, n)
			a, b := pair(t)
			before := openFDs(t)
			// Odd counts carry a flag, so that it is shown to reach
			// every message of a handoff of more than one.
			flags := byte(n%2) * wire.FlagInterceptBind
			errc := make(chan error, 1)
			go func() { errc <- Send(a, flags, socks) }()
			got, gotFlags, err := Receive(b)
			if err != nil {
				t.Fatal(err)
			}
			if gotFlags != flags {
				t.Errorf("flags 0x%x, sent 0x%x", gotFlags, flags)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			defer closeAll(got)
			if len(got) != n {
				t.Fatalf("received %d sockets, want %d", len(got), n)
			}
			if d := openFDs(t) - before; d != n {
				t.Errorf("%d new descriptors, want %d", d, n)
			}
			for i := range got {
				if got[i].Name != socks[i].Name {
					t.Fatalf("socket %d named %q, want %q", i, got[i].Name, socks[i].Name)
				}
				if inode(t, got[i].File) != inode(t, socks[i].File) {
					t.Fatalf("socket %d is a different socket", i)
				}
				flags, _ := unix.FcntlInt(uintptr(rawFD(t, got[i].File)), unix.F_GETFD, 0)
				if flags&unix.FD_CLOEXEC == 0 {
					t.Fatalf("socket %d received without close-on-exec", i)
				}
			}
		})
	}
}

func rawFD(t *testing.T, f *os.File) int {
	var fd int
	withRawFD(f, func(x int) error { fd = x; return nil })
	return fd
}

// sendRaw writes one hand-made message with the given fds attached.
func sendRaw(t *testing.T, conn *os.File, payload []byte, fds []int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	err := withRawFD(conn, func(c int) error { return unix.Sendmsg(c, payload, oob, nil, 0) })
	if err != nil {
		t.Fatal(err)
	}
}

func rawFDs(t *testing.T, socks []Socket) []int {
	fds := make([]int, len(socks))
	for i, s := range socks {
		fds[i] = rawFD(t, s.File)
	}
	return fds
}

func names(n, from int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "s" + strconv.Itoa(from+i)
	}
	return out
}

// TestReceiveErrors sends malformed handoffs and checks that each is
// rejected with a specific error and that no descriptor leaks.
func TestReceiveErrors(t *testing.T) {
	cases := []struct {
		name  string
		write func(t *testing.T, a, b *os.File, fds []int)
		want  string
	}{
		{"truncated payload", func(t *testing.T, a, b *os.File, fds []int) {
			sendRaw(t, a, wire.Encode(0, 2, 0, names(2, 0))[:wire.HeaderLen+3], fds[:2])
		}, "payload ends"},
		{"wrong magic", func(t *testing.T, a, b *os.File, fds []int) {
			p := wire.Encode(0, 1, 0, names(1, 0))
			p[0] = 'X'
			sendRaw(t, a, p, fds[:1])
		}, "bad magic"},
		{"wrong version", func(t *testing.T, a, b *os.File, fds []int) {
			p := wire.Encode(0, 1, 0, names(1, 0))
			p[4] = 2
			sendRaw(t, a, p, fds[:1])
		}, "protocol version 2, want 1"},
		{"fewer fds than the header says", func(t *testing.T, a, b *os.File, fds []int) {
			sendRaw(t, a, wire.Encode(0, 3, 0, names(3, 0)), fds[:2])
		}, "carries 2 descriptors, header says 3"},
		{"more fds than the header says", func(t *testing.T, a, b *os.File, fds []int) {
			sendRaw(t, a, wire.Encode(0, 3, 0, names(2, 0)), fds[:3])
		}, "carries 3 descriptors, header says 2"},
		{"total changes", func(t *testing.T, a, b *os.File, fds []int) {
			sendRaw(t, a, wire.Encode(0, 3, 0, names(2, 0)), fds[:2])
			sendRaw(t, a, wire.Encode(0, 4, 2, names(1, 2)), fds[2:3])
		}, "message 2 says the total is 4, message 1 said 3"},
		{"chunk out of order", func(t *testing.T, a, b *os.File, fds []int) {
			sendRaw(t, a, wire.Encode(0, 3, 0, names(1, 0)), fds[:1])
			sendRaw(t, a, wire.Encode(0, 3, 2, names(1, 2)), fds[2:3])
		}, "message 2 starts at socket 2, expected 1"},
		{"unknown flag", func(t *testing.T, a, b *os.File, fds []int) {
			sendRaw(t, a, wire.Encode(0x80|wire.FlagInterceptBind, 1, 0, names(1, 0)), fds[:1])
		}, "unknown flags 0x80"},
		{"flags change", func(t *testing.T, a, b *os.File, fds []int) {
			sendRaw(t, a, wire.Encode(wire.FlagInterceptBind, 3, 0, names(2, 0)), fds[:2])
			sendRaw(t, a, wire.Encode(0, 3, 2, names(1, 2)), fds[2:3])
		}, "message 2 has flags 0x0, message 1 had 0x1"},
		{"peer closes mid-stream", func(t *testing.T, a, b *os.File, fds []int) {
			sendRaw(t, a, wire.Encode(0, 3, 0, names(2, 0)), fds[:2])
			a.Close()
		}, "peer closed after 2 of 3 sockets"},
		{"peer closes at once", func(t *testing.T, a, b *os.File, fds []int) {
			a.Close()
		}, "peer closed before sending anything"},
		{"bad name", func(t *testing.T, a, b *os.File, fds []int) {
			sendRaw(t, a, wire.Encode(0, 1, 0, []string{"a:b"}), fds[:1])
		}, "contains ':'"},
		{"garbage", func(t *testing.T, a, b *os.File, fds []int) {
			sendRaw(t, a, []byte("GET / HTTP/1.1\r\n\r\n"), fds[:1])
		}, "bad magic"},
		{"control data truncated (MSG_CTRUNC)", func(t *testing.T, a, b *os.File, fds []int) {
			// The kernel refuses more than 253 fds per message, so make
			// room run out another way: with SO_PASSCRED on the receiver,
			// credentials take part of a buffer sized for exactly 253 fds.
			err := withRawFD(b, func(fd int) error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
			if err != nil {
				t.Fatal(err)
			}
			sendRaw(t, a, wire.Encode(0, 253, 0, names(253, 0)), fds[:253])
		}, "MSG_CTRUNC"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			socks := sockets(t, 300)
			a, b := pair(t)
			before := openFDs(t)
			c.write(t, a, b, rawFDs(t, socks))
			got, _, err := Receive(b)
			if err == nil {
				closeAll(got)
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
			if got != nil {
				t.Errorf("sockets returned with an error")
			}
			// a may have been closed by the case, which is one fd fewer.
			after := openFDs(t)
			if after != before && after != before-1 {
				t.Errorf("%d descriptors before, %d after: leaked or closed twice", before, after)
			}
		})
	}
}

func TestSendRejectsBadNames(t *testing.T) {
	socks := sockets(t, 1)
	a, _ := pair(t)
	for _, name := range []string{"", "a:b", "tab\there", strings.Repeat("x", 256)} {
		socks[0].Name = name
		if err := Send(a, 0, socks); err == nil {
			t.Errorf("Send accepted name %q", name)
		}
	}
}

// TestTrampoline starts the test binary as a trampoline exec'ing a shell
// that reports what it inherited.
func TestTrampoline(t *testing.T) {
	ln1, _ := net.Listen("tcp", "127.0.0.1:0")
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln1.Close()
	defer ln2.Close()
	f1, _ := ln1.(*net.TCPListener).File()
	f2, _ := ln2.(*net.TCPListener).File()
	defer f1.Close()
	defer f2.Close()
	// A descriptor without close-on-exec in the parent must still not
	// reach the worker: only ExtraFiles are passed by exec.Cmd, and the
	// trampoline marks everything else close-on-exec.
	leak, _ := unix.Open("/dev/null", unix.O_RDONLY, 0)
	defer unix.Close(leak)

	a, b := pair(t)
	script := `echo "pid=$$ fds=$LISTEN_FDS names=$LISTEN_FDNAMES lpid=$LISTEN_PID stray=$LISTEN_STRAY"; exec ls -l /proc/self/fd`
	cmd := exec.Command(os.Args[0], TrampolineArg, "--", "/bin/sh", "-c", script)
	cmd.ExtraFiles = []*os.File{b}
	cmd.Env = append(os.Environ(), "LISTEN_FDS=9", "LISTEN_STRAY=x")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := Send(a, 0, []Socket{{"web", f1}, {"admin", f2}}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	pid := cmd.Process.Pid
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := fmt.Sprintf("pid=%d fds=2 names=web:admin lpid=%d stray=", pid, pid)
	if lines[0] != want {
		t.Errorf("environment line %q, want %q", lines[0], want)
	}
	// ls prints one line per fd: 0, 1, 2, 3, 4 and its own directory fd.
	fds := map[int]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 3 || f[len(f)-2] != "->" {
			continue
		}
		n, _ := strconv.Atoi(f[len(f)-3])
		fds[n] = f[len(f)-1]
	}
	for fd, target := range fds {
		switch {
		case fd <= 2:
		case fd == 3 || fd == 4:
			if !strings.HasPrefix(target, "socket:") {
				t.Errorf("fd %d is %s, want a socket", fd, target)
			}
		case strings.HasPrefix(target, "/proc/"):
			// ls's own directory handle
		default:
			t.Errorf("worker inherited fd %d -> %s", fd, target)
		}
	}
	if _, ok := fds[3]; !ok {
		t.Errorf("fd 3 missing: %v", fds)
	}
	if _, ok := fds[4]; !ok {
		t.Errorf("fd 4 missing: %v", fds)
	}
	if len(fds) != 6 {
		t.Errorf("worker has %d fds, want 6 (0-2, two sockets, ls's dir): %v", len(fds), fds)
	}
}

func TestTrampolineMissingCommand(t *testing.T) {
	a, b := pair(t)
	cmd := exec.Command(os.Args[0], TrampolineArg, "--", "/nonexistent/app")
	cmd.ExtraFiles = []*os.File{b}
	out, err := cmd.CombinedOutput()
	a.Close()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 127 {
		t.Fatalf("exit %v, want 127", err)
	}
	if !strings.Contains(string(out), "/nonexistent/app") {
		t.Errorf("error %q does not name the command", out)
	}
}

// TestTrampolineName: while it waits for its sockets, the trampoline is
// named for what it is in ps and top, not "4" (ImagePath's last element).
func TestTrampolineName(t *testing.T) {
	a, b := pair(t)
	cmd := exec.Command(os.Args[0], TrampolineArg, "--", "/bin/true")
	cmd.ExtraFiles = []*os.File{b}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	want := BinaryName[:15] // TASK_COMM_LEN - 1
	var comm string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if comm = strings.TrimSpace(string(raw)); comm == want {
			break
		}
	}
	a.Close() // the trampoline gives up: peer closed before sending
	cmd.Wait()
	if comm != want {
		t.Errorf("the waiting trampoline is named %q, want %q", comm, want)
	}
}

// TestTrampolineOwnEnv: the trampoline runs with OwnEnv in front of the
// worker's environment and execs the worker with exactly the worker's (and
// LISTEN_*), including a GOMAXPROCS of the worker's own.
func TestTrampolineOwnEnv(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, _ := ln.(*net.TCPListener).File()
	defer f.Close()
	for _, worker := range [][]string{
		{"PATH=/usr/bin:/bin", "A=1"},
		{"PATH=/usr/bin:/bin", "GOMAXPROCS=7", "A=1"},
	} {
		a, b := pair(t)
		args, env := TrampolineArgs([]string{"/usr/bin/env"}, worker)
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = env
		cmd.ExtraFiles = []*os.File{b}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		b.Close()
		// Still the trampoline, waiting for its sockets; the kernel fills
		// in a new image's environment a moment after exec lets go of
		// the parent.
		var seen []string
		for deadline := time.Now().Add(5 * time.Second); len(seen) == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if seen, err = procfs.Environ(cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
		}
		wantOwn := trampoline.OwnEnv
		if slices.Contains(worker, "GOMAXPROCS=7") {
			wantOwn = nil
		}
		if len(seen) < len(worker) || !slices.Equal(seen[:len(seen)-len(worker)], wantOwn) || !slices.Equal(seen[len(seen)-len(worker):], worker) {
			t.Errorf("trampoline's environment %q, want %q and then %q", seen, wantOwn, worker)
		}
		if err := Send(a, 0, []Socket{{"web", f}}); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		want := append(slices.Clone(worker), fmt.Sprintf("LISTEN_PID=%d", cmd.Process.Pid), "LISTEN_FDS=1", "LISTEN_FDNAMES=web")
		if got := strings.Split(strings.TrimSpace(out.String()), "\n"); !slices.Equal(got, want) {
			t.Errorf("worker environment %q, want %q", got, want)
		}
	}
}

// TestTrampolineOwnEnvMissing: an entry named as the trampoline's own that
// its environment lacks is a broken start, refused with status 127.
func TestTrampolineOwnEnvMissing(t *testing.T) {
	a, b := pair(t)
	cmd := exec.Command(os.Args[0], TrampolineArg, "GOMAXPROCS=1", "--", "/bin/true")
	cmd.Env = []string{"A=1"}
	cmd.ExtraFiles = []*os.File{b}
	a.Close() // a trampoline that went on would fail at the handoff instead
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 127 || !strings.Contains(string(out), `"GOMAXPROCS=1" is not in its environment`) {
		t.Fatalf("exit %v, output %q; want 127 naming the missing entry", err, out)
	}
}
