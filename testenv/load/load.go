// Package load is the load client of sockshim's tests and benchmarks: N
// concurrent HTTP/1.1 clients for a bounded time or number of requests, with
// every failure counted by kind.
//
// It speaks HTTP/1.1 over net.Conn itself instead of using net/http's
// Transport, because the Transport retries some failed requests on reused
// connections on its own; a test that must prove "zero failed requests"
// needs to see every one of those, and count the retries an ordinary client
// would do (a request that fails on a reused idle connection before any
// response byte arrived) separately from real failures. With PostBytes set it
// sends POSTs, which are never retried (RFC 9110 §9.2.2: a POST is not
// idempotent), so every request lost on a reused connection is a failure.
// (net/http's Transport does retry a POST on a reused connection when nothing
// of it could be written and Request.GetBody is set; this client does not.)
package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options bound and shape a run.
type Options struct {
	URL         string
	Concurrency int           // clients; default 1
	Duration    time.Duration // stop after this long…
	MaxRequests int           // …or after this many requests (0: no limit); at least one bound is required
	KeepAlive   bool          // reuse connections; false: a new connection per request
	PostBytes   int           // > 0: every request is a POST with a body of this many bytes
	Timeout     time.Duration // per request; default 5s
	// RecordSamples keeps every request's start, latency and outcome.
	RecordSamples bool
}

// Result counts what happened.
type Result struct {
	Requests    int            // requests attempted (a retried request counts once)
	OK          int            // answered 200
	Failures    map[string]int // refused, reset, eof, timeout, status_NNN, other
	IdleRetries int            // keep-alive GETs: retried after failing on a reused idle connection (POSTs fail instead)
	Versions    map[string]int // by X-Version
	Generations map[string]int // by X-Generation
	P50, P99    time.Duration
	Max         time.Duration
	LongestGap  time.Duration // longest time without a successful answer
	Began       time.Time     // when the run started; Sample.Start counts from here
	Elapsed     time.Duration
	Samples     []Sample
	// Examples holds one error message per failure kind, for diagnosis.
	Examples map[string]string
}

// Sample is one request, for plots.
type Sample struct {
	Start   time.Duration // since the run began
	Latency time.Duration
	OK      bool
}

// Failed is the number of requests that did not get a 200.
func (r *Result) Failed() int {
	n := 0
	for _, c := range r.Failures {
		n += c
	}
	return n
}

// String is a one-line summary.
func (r *Result) String() string {
	rate := 0.0
	if r.Elapsed > 0 {
		rate = float64(r.Requests) / r.Elapsed.Seconds()
	}
	return fmt.Sprintf("%d requests in %s (%.0f/s), %d ok, %d failed %v, %d idle retries, p50 %s p99 %s max %s, longest gap %s",
		r.Requests, r.Elapsed.Round(time.Millisecond), rate, r.OK, r.Failed(), r.Failures, r.IdleRetries,
		r.P50, r.P99, r.Max, r.LongestGap.Round(time.Millisecond))
}

// Run drives load until ctx ends or a bound is reached.
func Run(ctx context.Context, o Options) (*Result, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("load: URL %q: want http://host:port/path", o.URL)
	}
	if o.Duration <= 0 && o.MaxRequests <= 0 {
		return nil, errors.New("load: set Duration or MaxRequests")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	path := u.RequestURI()
	method := "GET"
	if o.PostBytes > 0 {
		method = "POST"
	}
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sockshim-load\r\n", method, path, u.Host)
	if o.PostBytes > 0 {
		req += fmt.Sprintf("Content-Type: application/octet-stream\r\nContent-Length: %d\r\n", o.PostBytes)
	}
	if !o.KeepAlive {
		req += "Connection: close\r\n"
	}
	req += "\r\n" + strings.Repeat("p", max(o.PostBytes, 0))

	run := &runner{o: o, addr: u.Host, req: []byte(req), start: time.Now()}
	run.lastOK.Store(int64(0))
	// The run ends for the gap count when it is asked to, not when the last
	// client has noticed: winding down is not the server's silence.
	stopWatch := context.AfterFunc(ctx, func() { run.stopAt.CompareAndSwap(0, int64(time.Since(run.start))) })
	defer stopWatch()
	var wg sync.WaitGroup
	locals := make([]*tally, o.Concurrency)
	for i := range locals {
		locals[i] = newTally()
		wg.Add(1)
		go func(t *tally) {
			defer wg.Done()
			run.client(ctx, t)
		}(locals[i])
	}
	wg.Wait()
	return run.merge(locals), nil
}

type runner struct {
	o      Options
	addr   string
	req    []byte
	start  time.Time
	issued atomic.Int64
	lastOK atomic.Int64 // ns since start of the last success
	stopAt atomic.Int64 // ns since start when ctx ended; 0 while it runs
	gapMu  sync.Mutex
	gap    time.Duration
}

// tally is one client's counts, merged at the end (no shared counters on
// the hot path).
type tally struct {
	requests, ok, retries int
	failures, versions    map[string]int
	generations           map[string]int
	examples              map[string]string
	lat                   []time.Duration
	samples               []Sample
}

func newTally() *tally {
	return &tally{failures: map[string]int{}, versions: map[string]int{}, generations: map[string]int{}, examples: map[string]string{}}
}

func (r *runner) client(ctx context.Context, t *tally) {
	var c *conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for !ended(ctx) {
		if r.o.MaxRequests > 0 && r.issued.Add(1) > int64(r.o.MaxRequests) {
			return
		}
		begin := time.Now()
		resp, err := r.do(ctx, &c, t)
		if err != nil && ended(ctx) {
			return // the run ended mid-request: not the server's failure
		}
		lat := time.Since(begin)
		t.requests++
		t.lat = append(t.lat, lat)
		ok := err == nil && resp.status == 200
		switch {
		case err != nil:
			kind := Classify(err)
			t.failures[kind]++
			if _, seen := t.examples[kind]; !seen {
				t.examples[kind] = err.Error()
			}
		case resp.status != 200:
			kind := fmt.Sprintf("status_%d", resp.status)
			t.failures[kind]++
		default:
			t.ok++
			t.versions[resp.version]++
			t.generations[resp.generation]++
			r.success(time.Since(r.start))
		}
		if r.o.RecordSamples {
			t.samples = append(t.samples, Sample{Start: begin.Sub(r.start), Latency: lat, OK: ok})
		}
	}
}

// ended reports whether the run is over. It checks the deadline itself:
// ctx.Err() turns non-nil only once the context's timer has fired, and a dial
// or read already past the deadline fails with "i/o timeout" before that; a
// client that relied on ctx.Err() alone would spin through such failures and
// count them against the server.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// success records the gap since the latest success. A client that reports
// a success older than the latest (it was descheduled between its answer
// and this call) neither opens nor closes a gap, and lastOK never moves
// back: moving it back made the next success look like the end of a gap
// that no client saw, tens of milliseconds on a saturated machine.
func (r *runner) success(at time.Duration) {
	if stop := r.stopAt.Load(); stop > 0 && int64(at) > stop {
		at = time.Duration(stop) // what the run measured ends at its stop
	}
	for {
		prev := r.lastOK.Load()
		if int64(at) <= prev {
			return
		}
		if r.lastOK.CompareAndSwap(prev, int64(at)) {
			r.gapMu.Lock()
			r.gap = max(r.gap, at-time.Duration(prev))
			r.gapMu.Unlock()
			return
		}
	}
}

type response struct {
	status              int
	version, generation string
}

// do sends one request. In keep-alive mode a GET that fails on a reused
// connection before any byte of the answer arrived is retried once on a new
// connection, as HTTP clients do for idempotent requests (RFC 9110 §9.2.2);
// a POST is not retried.
func (r *runner) do(ctx context.Context, c **conn, t *tally) (*response, error) {
	if *c != nil {
		resp, err := r.roundTrip(*c)
		if err == nil {
			if !r.o.KeepAlive || resp.close {
				(*c).Close()
				*c = nil
			}
			return &resp.response, nil
		}
		(*c).Close()
		*c = nil
		if resp.gotBytes || ended(ctx) {
			return nil, err
		}
		if r.o.PostBytes > 0 {
			return nil, fmt.Errorf("POST on a reused connection, no answer: %w", err)
		}
		t.retries++
	}
	nc, err := r.dial(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := r.roundTrip(nc)
	if err != nil || !r.o.KeepAlive || resp.close {
		nc.Close()
	} else {
		*c = nc
	}
	if err != nil {
		return nil, err
	}
	return &resp.response, nil
}

func (r *runner) dial(ctx context.Context) (*conn, error) {
	d := net.Dialer{Timeout: r.o.Timeout}
	nc, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: nc}
	c.br = bufio.NewReader(&countingReader{r: nc, n: &c.read})
	return c, nil
}

type conn struct {
	net.Conn
	br   *bufio.Reader
	read int64 // bytes read since the current request was written
}

type countingReader struct {
	r io.Reader
	n *int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

type result struct {
	response
	close    bool // server said Connection: close
	gotBytes bool // any byte of the answer arrived
}

func (r *runner) roundTrip(c *conn) (result, error) {
	c.read = 0
	c.SetDeadline(time.Now().Add(r.o.Timeout))
	if _, err := c.Write(r.req); err != nil {
		return result{}, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return result{gotBytes: c.read > 0}, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return result{gotBytes: true}, err
	}
	return result{
		response: response{status: resp.StatusCode, version: resp.Header.Get("X-Version"), generation: resp.Header.Get("X-Generation")},
		close:    resp.Close,
		gotBytes: true,
	}, nil
}

// Classify names the kind of a transport error: refused, reset, eof,
// timeout or other, the keys of Result.Failed.
func Classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

func (r *runner) merge(ts []*tally) *Result {
	res := &Result{Failures: map[string]int{}, Versions: map[string]int{}, Generations: map[string]int{}, Examples: map[string]string{}}
	var lat []time.Duration
	for _, t := range ts {
		res.Requests += t.requests
		res.OK += t.ok
		res.IdleRetries += t.retries
		for k, v := range t.failures {
			res.Failures[k] += v
		}
		for k, v := range t.versions {
			res.Versions[k] += v
		}
		for k, v := range t.generations {
			res.Generations[k] += v
		}
		for k, v := range t.examples {
			res.Examples[k] = v
		}
		lat = append(lat, t.lat...)
		res.Samples = append(res.Samples, t.samples...)
	}
	res.Began, res.Elapsed = r.start, time.Since(r.start)
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		res.P50 = lat[n/2]
		res.P99 = lat[min(n-1, n*99/100)]
		res.Max = lat[n-1]
	}
	// The gap until the end of the run counts too: a server that stopped
	// answering for good has an unbounded gap, not the last small one.
	r.success(res.Elapsed) // counted to the stop, if the run was stopped
	res.LongestGap = r.gap
	sort.Slice(res.Samples, func(i, j int) bool { return res.Samples[i].Start < res.Samples[j].Start })
	return res
}
