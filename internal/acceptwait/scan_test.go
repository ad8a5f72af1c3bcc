package acceptwait

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv runs the test binary as a server that holds two listening
// sockets, at fds 3 and 4, and waits on fd 3 only, in the way it names.
const helperEnv = "ACCEPTWAIT_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

// helper waits on fd 3 as mode says, after it wrote "ready": with epoll the
// set is complete by then; the calls that block are entered soon after.
// The descriptors are used raw, never wrapped in an os.File, which would
// add them to the Go runtime's own epoll set.
func helper(mode string) int {
	for _, fd := range []int{3, 4} {
		if err := unix.SetNonblock(fd, false); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	var err error
	switch mode {
	case "idle":
		fmt.Println("ready")
		for {
			unix.Pause()
		}
	case "accept":
		fmt.Println("ready")
		_, _, err = unix.Accept(3)
	case "epoll":
		var ep int
		if ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
			break
		}
		// fd 4 is in the set for output only: not a wait for connections.
		if err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, 3, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: 3}); err != nil {
			break
		}
		if err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, 4, &unix.EpollEvent{Events: unix.EPOLLOUT, Fd: 4}); err != nil {
			break
		}
		fmt.Println("ready")
		_, err = unix.EpollWait(ep, make([]unix.EpollEvent, 1), -1)
	case "poll":
		fmt.Println("ready")
		_, err = unix.Poll([]unix.PollFd{{Fd: 4, Events: unix.POLLOUT}, {Fd: 3, Events: unix.POLLIN}}, -1)
	case "ppoll":
		fmt.Println("ready")
		_, err = unix.Ppoll([]unix.PollFd{{Fd: 3, Events: unix.POLLIN}}, nil, nil)
	case "select":
		var r unix.FdSet
		r.Set(3)
		fmt.Println("ready")
		_, err = unix.Select(5, &r, nil, nil, nil)
	case "pselect":
		var r unix.FdSet
		r.Set(3)
		fmt.Println("ready")
		_, err = unix.Pselect(5, &r, nil, nil, nil, nil)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	fmt.Println(err)
	return 1
}

// listener returns a listening socket's file (blocking, as File makes it)
// and its name as /proc links give it.
func listener(t *testing.T) (*os.File, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, socketID(st.Ino)
}

// startHelper starts a helper in mode with the two sockets and waits for
// its "ready".
func startHelper(t *testing.T, mode string, waited, other *os.File) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.ExtraFiles = []*os.File{waited, other}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("helper %s: %q %v", mode, line, err)
	}
	return cmd.Process.Pid
}

// scanUntil scans pids until cond holds of the report, for up to 10 s: a
// helper enters its blocking call a moment after it says "ready".
func scanUntil(t *testing.T, pids []int, sockets map[string]bool, cond func(Report) bool) Report {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := Scan(pids, sockets)
		if err != nil {
			t.Fatalf("Scan(%v): %v", pids, err)
		}
		if cond(r) || time.Now().After(deadline) {
			return r
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Each way of waiting for connections on fd 3 is seen; fd 4, held and not
// waited on (or only for output), keeps the process from counting as
// accepting on every socket it holds, and is the one Idle names.
func TestWaysOfWaiting(t *testing.T) {
	modes := []string{"accept", "epoll", "poll", "ppoll", "select", "pselect"}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			waited, wid := listener(t)
			other, oid := listener(t)
			pid := startHelper(t, mode, waited, other)
			sockets := map[string]bool{wid: true, oid: true}
			r := scanUntil(t, []int{pid}, sockets, func(r Report) bool { return r.Waited[wid] })
			if !r.Held[wid] || !r.Held[oid] || !r.Waited[wid] || r.Waited[oid] {
				t.Fatalf("%s: %+v; want both held, only %s waited on", mode, r, wid)
			}
			if r.Accepting() || !slices.Equal(r.Idle(), []string{oid}) {
				t.Errorf("%s: Accepting %v, Idle %v; want false, [%s]", mode, r.Accepting(), r.Idle(), oid)
			}
			// Asked about the waited socket alone, the process accepts.
			if r, err := Scan([]int{pid}, map[string]bool{wid: true}); err != nil || !r.Accepting() {
				t.Errorf("%s: fd 3 alone: %+v %v; want accepting", mode, r, err)
			}
		})
	}
}

// A process that holds the sockets and waits on neither is not accepting;
// another process that waits on one makes the pair accept on it: what
// counts is the worker's processes together (a master that holds, a child
// that accepts).
func TestAcrossProcesses(t *testing.T) {
	a, aid := listener(t)
	b, bid := listener(t)
	idle := startHelper(t, "idle", a, b)
	sockets := map[string]bool{aid: true, bid: true}
	r, err := Scan([]int{idle}, sockets)
	if err != nil || !r.Held[aid] || !r.Held[bid] || len(r.Waited) != 0 || r.Accepting() {
		t.Fatalf("idle: %+v %v; want both held, none waited on", r, err)
	}
	accepting := startHelper(t, "accept", a, b)
	r = scanUntil(t, []int{idle, accepting}, sockets, func(r Report) bool { return r.Waited[aid] })
	if !r.Waited[aid] || r.Waited[bid] || r.Accepting() {
		t.Fatalf("idle and accepting: %+v; want %s waited on, not %s", r, aid, bid)
	}
	r = scanUntil(t, []int{idle, accepting}, map[string]bool{aid: true}, Report.Accepting)
	if !r.Accepting() {
		t.Fatalf("asked about %s only: %+v; want accepting", aid, r)
	}
}

// Nothing held is not accepting, and a process that is gone is left out
// without an error: it exited between the listing and the reading.
func TestNothingHeld(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	r, err := Scan([]int{os.Getpid(), cmd.Process.Pid}, map[string]bool{"socket:[1]": true})
	if err != nil || len(r.Held) != 0 || r.Accepting() {
		t.Errorf("Scan of itself and a reaped pid for a socket neither has: %+v %v", r, err)
	}
}

func TestParseSyscall(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		nr   int64
		arg0 uint64
	}{
		{"288 0x3 0x0 0x0 0x80800 0x0 0x0 0x7ffc3a1b2c40 0x7f0e3c51a2b7\n", true, 288, 3},
		{"232 0x4 0xc000085e48 0x80 0xffffffff 0x0 0x0 0x7ffd8 0x46b0c3", true, 232, 4},
		{"running\n", false, 0, 0},
		{"-1 0x7ffc3a1b2c40 0x7f0e3c51a2b7\n", false, 0, 0},
		{"43 0x3 0x0", false, 0, 0},
		{"43 0xZZ 0x0 0x0 0x0 0x0 0x0 0x1 0x2", false, 0, 0},
		{"", false, 0, 0},
	} {
		c, ok := parseSyscall([]byte(tc.in))
		if ok != tc.ok || (ok && (c.nr != tc.nr || c.args[0] != tc.arg0)) {
			t.Errorf("parseSyscall(%q) = %+v, %v; want nr %d arg0 %d, %v", tc.in, c, ok, tc.nr, tc.arg0, tc.ok)
		}
	}
}

func TestEpollInputs(t *testing.T) {
	fdinfo := strings.Join([]string{
		"pos:\t0",
		"flags:\t02000002",
		"mnt_id:\t15",
		"ino:\t1057",
		"tfd:        3 events:       19 data:                3  pos:0 ino:1f4a sdev:8",
		"tfd:        4 events:        4 data:                4  pos:0 ino:1f4b sdev:8",
		"tfd:        5 events: 40000001 data:                5  pos:0 ino:2a sdev:8",
		"tfd:        6 events:       zz data:                6  pos:0 ino:2b sdev:8",
		"tfd:        7 events:        1 data:                7  pos:0 sdev:8",
		"",
	}, "\n")
	if got, want := epollInputs([]byte(fdinfo)), []uint64{0x1f4a, 0x2a}; !slices.Equal(got, want) {
		t.Errorf("epollInputs = %x, want %x (input only, parsable lines only)", got, want)
	}
}
