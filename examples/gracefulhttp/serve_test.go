package gracefulhttp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/examples/gracefulhttp"
	"github.com/sockshim/sockshim/testenv/load"
)

// generation serves version on its own copy of the socket behind f, as a
// worker that inherited it would, and counts the requests it answered.
type generation struct {
	*gracefulhttp.Server
	answered atomic.Int64
}

func start(t *testing.T, f *os.File, version string, grace time.Duration) *generation {
	t.Helper()
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	g := &generation{}
	g.Server = gracefulhttp.New(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Version", version)
		g.answered.Add(1)
		fmt.Fprintln(w, "ok")
	})})
	g.IdleGrace = grace
	g.Serve([]net.Listener{ln})
	t.Cleanup(func() { g.Drain(context.Background()) })
	return g
}

// socket is a listening socket held open for the test, as sockshim holds it,
// and its address.
func socket(t *testing.T) (*os.File, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	t.Cleanup(func() { f.Close() })
	return f, ln.Addr().String()
}

func waitAnswered(t *testing.T, g *generation, n int64) {
	t.Helper()
	for g.answered.Load() < n {
		time.Sleep(time.Millisecond)
	}
}

// TestDrainUnderKeepAlive: keep-alive clients that never stop sending lose no
// POST and retry no GET while one generation drains and the next serves.
func TestDrainUnderKeepAlive(t *testing.T) {
	for _, post := range []int{0, 4096} {
		t.Run(fmt.Sprintf("post=%d", post), func(t *testing.T) {
			f, addr := socket(t)
			old := start(t, f, "old", 0)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			done := make(chan *load.Result)
			go func() {
				res, err := load.Run(ctx, load.Options{URL: "http://" + addr + "/", Concurrency: 16, Duration: time.Hour, KeepAlive: true, PostBytes: post})
				if err != nil {
					t.Error(err)
				}
				done <- res
			}()
			waitAnswered(t, old, 2000)
			next := start(t, f, "new", 0)
			if err := old.Drain(context.Background()); err != nil {
				t.Fatal(err)
			}
			waitAnswered(t, next, 2000)
			stop()
			res := <-done
			t.Logf("%s", res)
			if res.Failed() != 0 || res.IdleRetries != 0 || res.OK != res.Requests {
				t.Errorf("want every request answered without a retry: %s %v", res, res.Examples)
			}
		})
	}
}

// TestDrainAnswersIdleConnection: a connection idle when Drain begins, and
// not yet for IdleGrace, stays open; its next request is answered with
// "Connection: close", and then the connection is closed.
func TestDrainAnswersIdleConnection(t *testing.T) {
	f, addr := socket(t)
	g := start(t, f, "old", time.Hour)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	roundTrip := func() *http.Response {
		t.Helper()
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp
	}
	if roundTrip().Close {
		t.Fatal("Connection: close before Drain")
	}
	drained := make(chan error)
	go func() { drained <- g.Drain(context.Background()) }()
	// Until Drain has begun, answers keep the connection alive.
	for !roundTrip().Close {
	}
	if n, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after Connection: close: read %q, %v; want EOF", n, err)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

// TestDrainClosesSilentConnections: connections idle, or new without a
// request, for IdleGrace are closed and Drain returns.
func TestDrainClosesSilentConnections(t *testing.T) {
	f, addr := socket(t)
	g := start(t, f, "old", 50*time.Millisecond)
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Only a connection this generation accepted is its to close; one still
	// in the socket's queue (held open by f) waits for a next generation.
	for g.Open() < 2 {
		time.Sleep(time.Millisecond)
	}
	if err := g.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]io.Reader{"idle": br, "silent": silent} {
		if n, err := r.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s connection after Drain: read %d bytes, %v; want EOF", name, n, err)
		}
	}
}

// TestFailedWhenAcceptEnds: a listener shut down by another holder of the
// socket ends the accept loop (EINVAL), and Failed says so; a Drain, which
// ends the accept loops too, is no failure.
func TestFailedWhenAcceptEnds(t *testing.T) {
	f, _ := socket(t)
	g := start(t, f, "v1", time.Second)
	raw, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) { err = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-g.Failed():
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Failed: %v, want accept's EINVAL", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing on Failed 5 s after the socket was shut down")
	}

	f2, _ := socket(t)
	g2 := start(t, f2, "v2", time.Second)
	if err := g2.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-g2.Failed():
		t.Errorf("Failed after Drain: %v", err)
	default:
	}
}
