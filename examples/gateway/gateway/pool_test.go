package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockshim/sockshim/examples/gateway/wire"
)

// backendServer is a real unix socket server; conn decides what each
// accepted connection (numbered from 0) does.
type backendServer struct {
	path     string
	accepted atomic.Int64
}

func serveBackend(t *testing.T, conn func(n int, c net.Conn)) *backendServer {
	t.Helper()
	s := &backendServer{path: filepath.Join(t.TempDir(), "internal.sock")}
	ln, err := net.Listen("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	s.run(t, ln, conn)
	return s
}

func (s *backendServer) run(t *testing.T, ln net.Listener, conn func(n int, c net.Conn)) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			n := int(s.accepted.Add(1) - 1)
			wg.Go(func() {
				defer c.Close()
				conn(n, c)
			})
		}
	})
}

// answer serves c like the business program: each request line answered
// with version v, at most max requests (-1: no limit); it returns how many it
// answered.
func answer(c net.Conn, v string, max int) int {
	br := bufio.NewReader(c)
	n := 0
	for max < 0 || n < max {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return n
		}
		req, err := wire.ParseRequest(bytes.TrimSuffix(line, []byte("\n")))
		if err != nil {
			return n
		}
		if _, err := c.Write(append(wire.AppendAnswer(nil, req.ID, v, wire.Result(req.Payload)), '\n')); err != nil {
			return n
		}
		n++
	}
	return n
}

func newPool(t *testing.T, s *backendServer, size int) *Pool {
	p := &Pool{Network: "unix", Address: s.path, Size: size, AttemptTimeout: 2 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	t.Cleanup(p.Close)
	return p
}

func do(t *testing.T, p *Pool, payload string) wire.Answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := p.Do(ctx, []byte(payload))
	if err != nil {
		t.Fatalf("Do(%q): %v", payload, err)
	}
	if want := wire.Result([]byte(payload)); !bytes.Equal(a.Result, want) {
		t.Fatalf("Do(%q) = %q, want result %q", payload, a.Result, want)
	}
	return a
}

// A connection that breaks after reading a request and before answering
// it: the request is sent again, on a new connection, and answered once.
func TestResendAfterBrokenConnection(t *testing.T) {
	s := serveBackend(t, func(n int, c net.Conn) {
		if n == 0 {
			bufio.NewReader(c).ReadSlice('\n') // read the request, then hang up
			return
		}
		answer(c, "v2", -1)
	})
	p := newPool(t, s, 1)
	if a := do(t, p, "hello"); a.Version != "v2" {
		t.Fatalf("version %q, want v2", a.Version)
	}
	st := p.Stats()
	if st.Resends != 1 || st.Redials != 1 || st.Dials != 2 || st.Duplicates != 0 {
		t.Fatalf("stats %+v, want 1 resend, 2 dials (1 redial), 0 duplicates", st)
	}
}

// A worker that ends its connection in the middle of pipelined requests
// (answers some, never reads the rest): every request is answered exactly
// once, with no error. A resend may race an answer on its way; the pool then
// drops the second answer (TestDuplicateAnswersDropped), so what callers see
// is counted, not the pool's duplicates.
func TestPipelinedRequestsSurviveClose(t *testing.T) {
	s := serveBackend(t, func(n int, c net.Conn) {
		if n < 3 {
			answer(c, "old", 5) // then close with requests unread
			return
		}
		answer(c, "new", -1)
	})
	p := newPool(t, s, 2)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() { do(t, p, fmt.Sprint("m", i)) })
	}
	wg.Wait()
	st := p.Stats()
	if st.Answered != 200 {
		t.Fatalf("stats %+v, want 200 answered", st)
	}
	if s.accepted.Load() < 4 || st.Resends == 0 {
		t.Fatalf("stats %+v, %d accepted: want the closes to have forced redials and resends", st, s.accepted.Load())
	}
}

// A second answer for the same id (a worker that answers twice, or a late
// answer after a resend) is dropped, never handed to a caller.
func TestDuplicateAnswersDropped(t *testing.T) {
	s := serveBackend(t, func(n int, c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			req, _ := wire.ParseRequest(bytes.TrimSuffix(line, []byte("\n")))
			ans := append(wire.AppendAnswer(nil, req.ID, "v1", wire.Result(req.Payload)), '\n')
			c.Write(append(ans, ans...))
		}
	})
	p := newPool(t, s, 1)
	for i := range 20 {
		do(t, p, fmt.Sprint("m", i))
	}
	// The duplicate of the last answer may still be on its way.
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Duplicates < 20 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := p.Stats(); st.Answered != 20 || st.Duplicates != 20 {
		t.Fatalf("stats %+v, want 20 answered and 20 duplicates dropped", st)
	}
}

// An attempt that gets no answer within AttemptTimeout (a worker that hangs)
// is sent again on another connection; the hung connection is closed.
func TestAttemptTimeout(t *testing.T) {
	hung := make(chan struct{})
	s := serveBackend(t, func(n int, c net.Conn) {
		if n == 0 {
			bufio.NewReader(c).ReadSlice('\n')
			<-hung // never answers
			return
		}
		answer(c, "v1", -1)
	})
	defer close(hung)
	p := newPool(t, s, 1)
	p.AttemptTimeout = 200 * time.Millisecond
	start := time.Now()
	do(t, p, "x")
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Fatalf("answered after %s, want just after the 200ms attempt timeout", d)
	}
	if st := p.Stats(); st.Resends != 1 {
		t.Fatalf("stats %+v, want 1 resend", st)
	}
}

// Retire (the gateway's SIGHUP) closes idle connections, so the next
// request dials and reaches whoever accepts now.
func TestRetire(t *testing.T) {
	s := serveBackend(t, func(n int, c net.Conn) { answer(c, fmt.Sprint("v", n), -1) })
	p := newPool(t, s, 1)
	if a := do(t, p, "a"); a.Version != "v0" {
		t.Fatalf("version %q, want v0", a.Version)
	}
	if n := p.Retire(); n != 1 {
		t.Fatalf("Retire = %d, want 1", n)
	}
	if a := do(t, p, "b"); a.Version != "v1" {
		t.Fatalf("after Retire: version %q, want v1 (a new connection)", a.Version)
	}
	if st := p.Stats(); st.Conns != 1 || st.Resends != 0 {
		t.Fatalf("stats %+v, want 1 open connection and no resend", st)
	}
}

// A request made while the socket does not exist yet (ENOENT, then
// ECONNREFUSED would be the same) is answered once it does, within DialRetry.
func TestDialRetry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "late.sock")
	s := &backendServer{path: path}
	go func() {
		time.Sleep(150 * time.Millisecond)
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Error(err)
			return
		}
		s.run(t, ln, func(n int, c net.Conn) { answer(c, "v1", -1) })
	}()
	p := newPool(t, s, 1)
	do(t, p, "late")
}

// Without any business worker for longer than the caller waits, Do fails
// with the context's error and the cause; it does not hang.
func TestNoBackend(t *testing.T) {
	p := &Pool{Network: "unix", Address: filepath.Join(t.TempDir(), "none.sock"), DialRetry: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := p.Do(ctx, []byte("x")); err == nil {
		t.Fatal("Do without a backend succeeded")
	}
}
