package load

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs handler on a loopback listener for the test's lifetime.
func serve(t *testing.T, handler http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

func versioned(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Version", "v7")
	w.Header().Set("X-Generation", "3")
	fmt.Fprintln(w, "ok")
}

// TestDeadlineIsNotAFailure: a run bounded by Duration ends without
// counting the requests its own deadline cut short. (Before ended() checked
// the deadline itself, 16 clients spun through thousands of instant
// "i/o timeout" dials between the deadline and ctx.Err() turning non-nil.)
func TestDeadlineIsNotAFailure(t *testing.T) {
	url := serve(t, http.HandlerFunc(versioned))
	for _, keepAlive := range []bool{false, true} {
		for range 5 {
			res, err := Run(context.Background(), Options{URL: url, Concurrency: 16, Duration: 300 * time.Millisecond, KeepAlive: keepAlive})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests == 0 || res.Failed() != 0 || res.OK != res.Requests {
				t.Fatalf("keepAlive=%v: %s %v", keepAlive, res, res.Examples)
			}
			if res.Versions["v7"] != res.OK || res.Generations["3"] != res.OK {
				t.Fatalf("versions %v generations %v, want all %d as v7/3", res.Versions, res.Generations, res.OK)
			}
		}
	}
}

// TestCountsFailuresByKind: answers the client must not take as success.
func TestCountsFailuresByKind(t *testing.T) {
	hangUp := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close() // read the request, answer nothing
		}
	}))
	status := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + closed.Addr().String() + "/"
	closed.Close()

	for _, c := range []struct {
		url, kind string
	}{{hangUp, "eof"}, {status, "status_503"}, {refused, "refused"}} {
		res, err := Run(context.Background(), Options{URL: c.url, Concurrency: 2, MaxRequests: 10})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 10 || res.Failures[c.kind] != 10 || res.OK != 0 {
			t.Errorf("%s: want 10 requests failing as %q, got %s", c.kind, c.kind, res)
		}
	}
}

// TestIdleRetry: in keep-alive mode, a server closing an idle connection
// costs a retry on a fresh connection, not a failed request.
func TestIdleRetry(t *testing.T) {
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		versioned(w, r)
		// Close the connection after answering, without saying so: the
		// next request on it fails before any byte of an answer.
		w.(http.Flusher).Flush()
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			time.Sleep(10 * time.Millisecond)
			c.Close()
		}
	}))
	res, err := Run(context.Background(), Options{URL: url, Concurrency: 1, MaxRequests: 20, KeepAlive: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed() != 0 || res.OK != 20 {
		t.Fatalf("want 20 ok, got %s %v", res, res.Examples)
	}
	if res.IdleRetries == 0 {
		t.Fatalf("want idle retries, got %s", res)
	}
}

// TestPost: in POST mode every request carries its body, and a request that
// fails on a reused connection is a failure, never retried.
func TestPost(t *testing.T) {
	const size = 1000
	var bodies atomic.Int64
	readBody := func(w http.ResponseWriter, r *http.Request) bool {
		b, err := io.ReadAll(r.Body)
		if err != nil || r.Method != "POST" || string(b) != strings.Repeat("p", size) {
			http.Error(w, "bad POST", http.StatusBadRequest)
			return false
		}
		bodies.Add(1)
		return true
	}
	keep := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if readBody(w, r) {
			versioned(w, r)
		}
	}))
	res, err := Run(context.Background(), Options{URL: keep, Concurrency: 4, MaxRequests: 100, KeepAlive: true, PostBytes: size})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 100 || res.OK != 100 || res.IdleRetries != 0 || bodies.Load() != 100 {
		t.Fatalf("want 100 POSTs received and answered, got %s, %d bodies received %v", res, bodies.Load(), res.Examples)
	}

	// As in TestIdleRetry, each connection is closed after its first answer
	// without saying so: every second POST meets a closed connection.
	bodies.Store(0)
	hangUp := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !readBody(w, r) {
			return
		}
		w.Header().Set("Content-Length", "3")
		versioned(w, r)
		w.(http.Flusher).Flush()
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			time.Sleep(10 * time.Millisecond)
			c.Close()
		}
	}))
	res, err = Run(context.Background(), Options{URL: hangUp, Concurrency: 1, MaxRequests: 20, KeepAlive: true, PostBytes: size})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 20 || res.OK != 10 || res.Failed() != 10 || res.IdleRetries != 0 || bodies.Load() != 10 {
		t.Fatalf("want 10 ok and 10 failed on a reused connection, none retried; got %s, %d bodies received %v", res, bodies.Load(), res.Examples)
	}
}

func TestRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{URL: "https://127.0.0.1:1/", Duration: time.Second},
		{URL: "127.0.0.1:1", Duration: time.Second},
		{URL: "http://127.0.0.1:1/"},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v): want an error", o)
		}
	}
}

// TestGapIgnoresLateReports: a success reported late (its client was
// descheduled between the answer and the report) is no gap's end and does
// not move the latest success back. Before, it did, and the next success
// closed a gap no client had seen.
func TestGapIgnoresLateReports(t *testing.T) {
	r := &runner{}
	for _, at := range []time.Duration{1 * time.Millisecond, 2 * time.Millisecond, 500 * time.Microsecond, 2500 * time.Microsecond} {
		r.success(at)
	}
	if r.gap != time.Millisecond {
		t.Fatalf("longest gap %s, want 1ms (0 → 1ms → 2ms → 2.5ms; the 0.5ms report is late)", r.gap)
	}
}

// TestGapEndsAtStop: the gap at the end of a run counts to when the run was
// stopped, not to when the last client noticed; a server that stops
// answering still shows the whole silence.
func TestGapEndsAtStop(t *testing.T) {
	var answering atomic.Bool
	answering.Store(true)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !answering.Load() {
			time.Sleep(time.Second) // what the clients wait on after the stop
		}
		versioned(w, r)
	})
	url := serve(t, slow)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, func() { answering.Store(false) })
	time.AfterFunc(400*time.Millisecond, cancel)
	res, err := Run(ctx, Options{URL: url, Concurrency: 4, Duration: time.Hour, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Silent from about 200 ms to the stop at 400 ms; the clients return
	// only at about 1.2 s, when the sleeping requests end.
	if res.LongestGap < 150*time.Millisecond || res.LongestGap > 350*time.Millisecond || res.Elapsed < 900*time.Millisecond {
		t.Fatalf("longest gap %s after a run of %s, want about 200ms: from the last answer to the stop", res.LongestGap, res.Elapsed)
	}
}
