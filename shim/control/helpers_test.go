package control

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// handler stands in for the supervisor: a reload reports one step and
// succeeds, or with block set waits until its context ends.
type handler struct {
	block    bool
	canceled chan struct{} // closed when a blocked reload's context ends
	started  chan struct{} // receives when a reload starts
}

func newHandler(block bool) *handler {
	return &handler{block: block, canceled: make(chan struct{}), started: make(chan struct{}, 64)}
}

func (h *handler) Reload(ctx context.Context, progress func(string)) (string, error) {
	h.started <- struct{}{}
	progress("starting generation 2")
	if h.block {
		<-ctx.Done()
		close(h.canceled)
		return "", ctx.Err()
	}
	return "generation 2 serving", nil
}

func (h *handler) Status(context.Context) (Status, error) {
	return Status{PID: os.Getpid(), State: "serving", Generation: 1}, nil
}

// logBuffer collects a server's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// listen opens a server in a fresh directory without serving yet.
func listen(t *testing.T) (*Server, string, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	path := filepath.Join(t.TempDir(), "ctl", "control.sock")
	s, err := Listen(path, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, path, logs
}

// serve is listen, then Serve with h; the server is closed at cleanup, and
// the test fails if that takes more than a few seconds.
func serve(t *testing.T, h Handler) (*Server, string, *logBuffer) {
	t.Helper()
	s, path, logs := listen(t)
	go s.Serve(h)
	t.Cleanup(func() { closeWithin(t, s, 5*time.Second) })
	return s, path, logs
}

// closeWithin closes s and returns how long that took, failing the test
// (and leaving Close running) after limit.
func closeWithin(t *testing.T, s *Server, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() {
		s.Close()
		close(done)
	}()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(limit):
		t.Errorf("Close did not return within %s", limit)
		return limit
	}
}

type callResult struct {
	reply *Reply
	err   error
}

// callWithin is Call that fails the test after limit instead of hanging.
func callWithin(t *testing.T, path string, req Request, limit time.Duration) (*Reply, error) {
	t.Helper()
	ch := make(chan callResult, 1)
	go func() {
		r, err := Call(path, req, nil)
		ch <- callResult{r, err}
	}()
	select {
	case r := <-ch:
		return r.reply, r.err
	case <-time.After(limit):
		t.Fatalf("%s request to %s got no answer within %s", req.Command, path, limit)
		return nil, nil
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
