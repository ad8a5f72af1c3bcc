package sockets

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"golang.org/x/sys/unix"
)

// shutdownChild is the environment variable that turns the test binary into
// a worker that calls shutdown(2) on the N sockets it inherited (descriptors
// 3…) and exits: the fault TestWatchRepairsShutdown puts the held sockets
// through.
const shutdownChild = "SOCKSHIM_TEST_SHUTDOWN_CHILD"

func shutdownInherited(n int) {
	for fd := 3; fd < 3+n; fd++ {
		// Unconnected datagram sockets answer ENOTCONN, and are shut down all
		// the same.
		if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil && err != unix.ENOTCONN {
			fmt.Fprintf(os.Stderr, "shutdown(%d): %v\n", fd, err)
			os.Exit(1)
		}
	}
	os.Exit(0)
}

// shutDownBy runs a process that inherits socks and shuts each one down.
func shutDownBy(t *testing.T, socks ...handoff.Socket) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", shutdownChild, len(socks)))
	for _, s := range socks {
		cmd.ExtraFiles = append(cmd.ExtraFiles, s.File)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("shutdown child: %v\n%s", err, out)
	}
}

// dialable connects to the address f is bound to, and reports the error.
func dialable(t *testing.T, network string, f *os.File) error {
	var addr string
	switch sa := localAddr(t, f).(type) {
	case *unix.SockaddrInet4:
		addr = fmt.Sprintf("127.0.0.1:%d", sa.Port)
	case *unix.SockaddrInet6:
		addr = fmt.Sprintf("[::1]:%d", sa.Port)
	case *unix.SockaddrUnix:
		addr = sa.Name
	}
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

// TestWatchRepairsShutdown: another process that holds the sockets shuts
// them down. The TCP listeners listen again with their backlog and accept
// connections; the unix and datagram sockets are reported as lost. Busy
// sockets report nothing, and a listener shut down twice is repaired twice.
func TestWatchRepairsShutdown(t *testing.T) {
	path := t.TempDir() + "/app.sock"
	ls := listens(t, "tcp://127.0.0.1:0", "tcp://[::1]:0", "udp://127.0.0.1:0", "unix:"+path)
	ls[0].Backlog = 7
	socks, err := Bind(ls)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(socks)
	reports := make(chan Shutdown, 16)
	w, err := Watch(socks, map[string]int{"s0": 7}, func(s Shutdown) { reports <- s })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Traffic on every socket: connections queued on the listeners (fewer
	// than s0's backlog), datagrams waiting on the udp socket.
	for range 5 {
		for i, network := range []string{"tcp4", "tcp6", "", "unix"} {
			if network == "" {
				continue
			}
			if err := dialable(t, network, socks[i].File); err != nil {
				t.Fatalf("%s before the shutdown: %v", network, err)
			}
		}
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: localAddr(t, socks[2].File).(*unix.SockaddrInet4).Port})
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		c.Close()
	}

	shutDownBy(t, socks...)
	got := map[string]Shutdown{}
	for range socks {
		select {
		case s := <-reports:
			if _, dup := got[s.Name]; dup {
				t.Errorf("%s reported twice: %+v", s.Name, s)
			}
			got[s.Name] = s
		case <-time.After(10 * time.Second):
			t.Fatalf("reports after the shutdown: %+v, want one for each of the %d sockets", got, len(socks))
		}
	}
	if s := got["s0"]; !s.Relistened || s.Backlog != 7 || s.Err != nil {
		t.Errorf("tcp4: %+v, want listening again with backlog 7", s)
	}
	if s := got["s1"]; !s.Relistened || s.Backlog != defaultBacklog || s.Err != nil {
		t.Errorf("tcp6: %+v, want listening again with backlog %d", s, defaultBacklog)
	}
	for _, n := range []string{"s2", "s3"} {
		if s := got[n]; s.Relistened || s.Err == nil {
			t.Errorf("%s: %+v, want reported as not repairable", n, s)
		}
	}
	if err := dialable(t, "tcp4", socks[0].File); err != nil {
		t.Errorf("tcp4 after the repair: %v", err)
	}
	if err := dialable(t, "tcp6", socks[1].File); err != nil {
		t.Errorf("tcp6 after the repair: %v", err)
	}
	if err := dialable(t, "unix", socks[3].File); err == nil {
		t.Errorf("unix after the shutdown: a connection went through")
	}

	shutDownBy(t, socks[0])
	select {
	case s := <-reports:
		if s.Name != "s0" || !s.Relistened {
			t.Errorf("second shutdown of tcp4: %+v", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no report for the second shutdown of tcp4")
	}
	if err := dialable(t, "tcp4", socks[0].File); err != nil {
		t.Errorf("tcp4 after the second repair: %v", err)
	}
	w.Close()
	if n := len(reports); n != 0 {
		t.Errorf("%d more reports: %+v", n, <-reports)
	}
}

// TestWatchNothing: with no socket to follow, Watch starts no goroutine
// (epoll_wait refuses an empty buffer, and a loop around it would spin).
func TestWatchNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	w, err := Watch(nil, nil, func(s Shutdown) { t.Errorf("report %+v", s) })
	if err != nil {
		t.Fatal(err)
	}
	if n := runtime.NumGoroutine(); n != before {
		t.Errorf("%d goroutines after Watch(nil), %d before", n, before)
	}
	w.Close()
}
