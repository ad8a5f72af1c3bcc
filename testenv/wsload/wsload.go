// Package wsload is the WebSocket load client of sockshim's tests and
// benchmarks, beside the HTTP one (testenv/load): N clients that each hold
// one WebSocket connection and send a message every Interval whether or not
// the previous one was answered (open loop: a slow server does not slow the
// offered load), with every message accounted for.
//
// It speaks the gateway example's protocol (examples/gateway/wire): a client
// sends "ID PAYLOAD", where ID is "CLIENT.SEQ", unique in the run, and
// expects "ID VERSION RESULT" with RESULT = wire.Result(PAYLOAD). Each
// message ends as exactly one of answered, errored ("ID ! REASON"), wrong (a
// RESULT that does not match), or lost (no answer within Timeout, or the
// connection closed while it was outstanding, or still outstanding when the
// run stopped); an answer to a message already answered is counted as
// duplicated, one to a message already counted lost as late.
package wsload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/sockshim/sockshim/examples/gateway/wire"
)

// Options shape a run.
type Options struct {
	URL          string        // ws://127.0.0.1:8090/ (loopback only in tests)
	Clients      int           // default 1
	Interval     time.Duration // a message per client this often; default 100ms
	Timeout      time.Duration // an answer later than this is lost; also bounds a handshake and a write; default 5s
	PayloadBytes int           // default 16
	// Reconnect makes a client whose connection the server closed connect
	// again (and go on counting under the same client number), as a real
	// client of a naive setup would. Without it the client stays gone.
	Reconnect bool
	// ConnectParallel bounds the handshakes in progress while Start
	// connects the clients; default 32.
	ConnectParallel int
	// RecordSamples keeps every answered message's send time and round
	// trip, for RTT.
	RecordSamples bool
}

// Result counts what happened.
type Result struct {
	Clients        int
	Connections    int            // handshakes that succeeded (Clients, plus reconnects)
	ConnectErrors  int            // handshakes that failed (reconnects only: Start fails on the first)
	Sent           int            // messages sent
	Answered       int            // answered with the right result
	Errored        int            // answered "ID ! REASON"
	Wrong          int            // answered with a result that does not match the payload, or an unknown id
	Lost           int            // no answer within Timeout, or connection closed or run stopped with it outstanding
	Late           int            // answers that came after their message was counted lost
	Duplicated     int            // answers to a message already answered
	ClosedByServer int            // connections the server closed (or that broke) while the run went on
	CloseReasons   map[string]int // of ClosedByServer: "1001 StatusGoingAway", "eof", "reset", …
	Versions       map[string]int // answers by VERSION
	// FirstSeen[i] maps each version client i was answered with to when it
	// was first (the answer's arrival).
	FirstSeen []map[string]time.Time
	P50, P99  time.Duration // round trip of answered messages
	Max       time.Duration
	Start     time.Time
	Elapsed   time.Duration
	Samples   []Sample          // with RecordSamples, by send time
	Examples  map[string]string // one message per kind of problem, for diagnosis
}

// Sample is one answered message.
type Sample struct {
	Sent time.Time
	RTT  time.Duration
}

// String is a one-line summary.
func (r *Result) String() string {
	rate := 0.0
	if r.Elapsed > 0 {
		rate = float64(r.Sent) / r.Elapsed.Seconds()
	}
	vs := make([]string, 0, len(r.Versions))
	for v, n := range r.Versions {
		vs = append(vs, fmt.Sprintf("%s:%d", v, n))
	}
	sort.Strings(vs)
	return fmt.Sprintf("%d clients, %d connections (%d failed), %d closed by server %v; %d sent in %s (%.0f/s), %d answered, %d errored, %d wrong, %d lost, %d late, %d duplicated; versions [%s]; p50 %s p99 %s max %s",
		r.Clients, r.Connections, r.ConnectErrors, r.ClosedByServer, r.CloseReasons, r.Sent, r.Elapsed.Round(time.Millisecond), rate,
		r.Answered, r.Errored, r.Wrong, r.Lost, r.Late, r.Duplicated, strings.Join(vs, " "), r.P50, r.P99, r.Max)
}

// NotSeenBy returns the clients that had not been answered with version by
// the time by (never, or first after by).
func (r *Result) NotSeenBy(version string, by time.Time) []int {
	var out []int
	for i, seen := range r.FirstSeen {
		if at, ok := seen[version]; !ok || at.After(by) {
			out = append(out, i)
		}
	}
	return out
}

// RTT returns the round-trip percentiles of the messages sent in [from, to)
// and how many there were; it needs RecordSamples.
func (r *Result) RTT(from, to time.Time) (p50, p99 time.Duration, n int) {
	var lat []time.Duration
	for _, s := range r.Samples {
		if !s.Sent.Before(from) && s.Sent.Before(to) {
			lat = append(lat, s.RTT)
		}
	}
	slices.Sort(lat)
	if n = len(lat); n > 0 {
		p50, p99 = lat[n/2], lat[min(n-1, n*99/100)]
	}
	return p50, p99, n
}

// Load is a run in progress.
type Load struct {
	o       Options
	start   time.Time
	http    *http.Client
	clients []*client
	stop    chan struct{}
	wg      sync.WaitGroup
	stopped atomic.Bool
}

// Start connects every client and starts sending. It returns once all are
// connected, or an error (and nothing left running) if one could not.
func Start(ctx context.Context, o Options) (*Load, error) {
	if !strings.HasPrefix(o.URL, "ws://") {
		return nil, fmt.Errorf("wsload: URL %q: want ws://host:port/path", o.URL)
	}
	if o.Clients <= 0 {
		o.Clients = 1
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.PayloadBytes <= 0 {
		o.PayloadBytes = 16
	}
	if o.ConnectParallel <= 0 {
		o.ConnectParallel = 32
	}
	d := &net.Dialer{Timeout: o.Timeout}
	l := &Load{
		o: o,
		// A transport of our own: no proxy from the environment, and no
		// limits that would make handshakes wait for each other.
		http: &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}},
		stop: make(chan struct{}),
	}
	l.clients = make([]*client, o.Clients)
	for i := range l.clients {
		l.clients[i] = &client{l: l, n: i, out: map[uint64]time.Time{}, lost: map[uint64]bool{},
			t: tally{closeReasons: map[string]int{}, versions: map[string]int{}, firstSeen: map[string]time.Time{}, examples: map[string]string{}}}
	}
	// Connect in parallel, at most ConnectParallel handshakes at a time.
	slots := make(chan struct{}, o.ConnectParallel)
	var cwg sync.WaitGroup
	errs := make([]error, o.Clients)
	for i, c := range l.clients {
		slots <- struct{}{}
		cwg.Go(func() {
			defer func() { <-slots }()
			c.conn, errs[i] = l.dial(ctx)
		})
	}
	cwg.Wait()
	if err := errors.Join(errs...); err != nil {
		n := 0
		for i, c := range l.clients {
			if errs[i] != nil {
				n++
			} else {
				c.conn.CloseNow()
			}
		}
		return nil, fmt.Errorf("wsload: %d of %d clients could not connect: %w", n, o.Clients, firstErr(errs))
	}
	l.start = time.Now()
	for _, c := range l.clients {
		c.t.connections++
		l.wg.Go(c.run)
	}
	return l, nil
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (l *Load) dial(ctx context.Context) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, l.o.Timeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, l.o.URL, &websocket.DialOptions{HTTPClient: l.http})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(wire.MaxMessage)
	return conn, nil
}

// Run starts a load, lets it run for d (or until ctx ends) and stops it.
func Run(ctx context.Context, o Options, d time.Duration) (*Result, error) {
	l, err := Start(ctx, o)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return l.Stop(), nil
}

// Seen returns how many clients have been answered with version so far.
func (l *Load) Seen(version string) int {
	n := 0
	for _, c := range l.clients {
		c.mu.Lock()
		if _, ok := c.t.firstSeen[version]; ok {
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// Stop stops sending, waits up to Timeout for the answers still outstanding,
// closes every connection (1000, normal closure) and returns the result.
// Call it once.
func (l *Load) Stop() *Result {
	elapsed := time.Since(l.start)
	l.stopped.Store(true)
	close(l.stop)
	l.wg.Wait()
	r := l.merge()
	r.Elapsed = elapsed
	return r
}

type client struct {
	l       *Load
	n       int
	conn    *websocket.Conn
	closing atomic.Bool // this client is closing its connection itself

	mu   sync.Mutex
	next uint64               // sequence number of the next message
	out  map[uint64]time.Time // outstanding: seq → sent
	lost map[uint64]bool      // counted lost; an answer to these is late
	t    tally
}

// tally is one client's counts, merged by Stop (no shared counters on the
// hot path).
type tally struct {
	connections, connectErrors                       int
	sent, answered, errored, wrong, lost, late, dupl int
	closedByServer                                   int
	closeReasons, versions                           map[string]int
	firstSeen                                        map[string]time.Time
	examples                                         map[string]string
	rtt                                              []time.Duration
	samples                                          []Sample
}

func (t *tally) example(kind, msg string) {
	if _, ok := t.examples[kind]; !ok {
		t.examples[kind] = msg
	}
}

// run drives one client: a connection at a time (a new one after the server
// closed the last, with Reconnect), until Stop.
func (c *client) run() {
	o := c.l.o
	// Spread the clients' sends evenly over an interval.
	offset := o.Interval * time.Duration(c.n) / time.Duration(o.Clients)
	for {
		closed := make(chan struct{})
		go c.read(c.conn, closed)
		byServer := c.send(c.conn, closed, offset)
		if !byServer || !o.Reconnect {
			return
		}
		// Connect again until it works or the run stops.
		for {
			select {
			case <-c.l.stop:
				return
			default:
			}
			conn, err := c.l.dial(context.Background())
			c.mu.Lock()
			if err != nil {
				c.t.connectErrors++
				c.t.example("connect", err.Error())
			} else {
				c.t.connections++
			}
			c.mu.Unlock()
			if err == nil {
				c.conn = conn
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// send sends a message every Interval on conn until Stop (then it waits for
// the outstanding answers, up to Timeout, and closes conn: false) or until
// the connection ends otherwise (true).
func (c *client) send(conn *websocket.Conn, closed <-chan struct{}, first time.Duration) (byServer bool) {
	o := c.l.o
	next := time.Now().Add(first)
	timer := time.NewTimer(first)
	defer timer.Stop()
	var buf []byte
	for {
		select {
		case <-closed:
			return true
		case <-c.l.stop:
			c.finish(conn, closed)
			return false
		case <-timer.C:
		}
		// Sends keep to a schedule (a late send does not push the next
		// one back), catching up at most one interval.
		now := time.Now()
		next = next.Add(o.Interval)
		if next.Before(now.Add(-o.Interval)) {
			next = now
		}
		timer.Reset(next.Sub(now))
		c.mu.Lock()
		c.expire(now)
		seq := c.next
		c.next++
		c.out[seq] = now
		c.t.sent++
		c.mu.Unlock()
		buf = wire.AppendRequest(buf[:0], c.id(seq), c.payload(seq))
		ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
		err := conn.Write(ctx, websocket.MessageText, buf)
		cancel()
		if err != nil {
			// The write failed: the connection is going; read reports
			// how it ended and counts what was outstanding.
			<-closed
			return true
		}
	}
}

// finish waits up to Timeout for the outstanding answers, then closes conn
// and waits for the reader to end.
func (c *client) finish(conn *websocket.Conn, closed <-chan struct{}) {
	deadline := time.Now().Add(c.l.o.Timeout)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		n := len(c.out)
		c.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-closed:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	c.closing.Store(true)
	conn.Close(websocket.StatusNormalClosure, "")
	<-closed
}

// expire counts the messages outstanding for longer than Timeout as lost.
// c.mu is held.
func (c *client) expire(now time.Time) {
	for seq, sent := range c.out {
		if now.Sub(sent) > c.l.o.Timeout {
			delete(c.out, seq)
			c.lost[seq] = true
			c.t.lost++
			c.t.example("lost", fmt.Sprintf("client %d message %d: no answer within %s", c.n, seq, c.l.o.Timeout))
		}
	}
}

func (c *client) id(seq uint64) []byte {
	return fmt.Appendf(nil, "%d.%d", c.n, seq)
}

// payload is a function of the message, so an answer can be checked without
// keeping what was sent.
func (c *client) payload(seq uint64) []byte {
	p := fmt.Appendf(nil, "m%d.%d.", c.n, seq)
	for len(p) < c.l.o.PayloadBytes {
		p = append(p, 'x')
	}
	return p
}

// read takes the answers on conn until it ends, then counts how it ended
// and closes closed.
func (c *client) read(conn *websocket.Conn, closed chan<- struct{}) {
	defer close(closed)
	for {
		_, msg, err := conn.Read(context.Background())
		if err != nil {
			c.ended(err)
			return
		}
		c.answer(msg, time.Now())
	}
}

func (c *client) answer(msg []byte, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, err := wire.ParseAnswer(msg)
	var seq uint64
	if err == nil {
		seq, err = c.parseID(a.ID)
	}
	if err != nil {
		c.t.wrong++
		c.t.example("wrong", fmt.Sprintf("client %d: %v", c.n, err))
		return
	}
	sent, ok := c.out[seq]
	switch {
	case ok:
		delete(c.out, seq)
	case c.lost[seq]:
		delete(c.lost, seq)
		c.t.late++
		c.t.example("late", fmt.Sprintf("client %d message %d answered after it was counted lost", c.n, seq))
		return
	case seq < c.next:
		c.t.dupl++
		c.t.example("duplicated", fmt.Sprintf("client %d message %d answered again: %q", c.n, seq, msg))
		return
	default:
		c.t.wrong++
		c.t.example("wrong", fmt.Sprintf("client %d: answer to message %d, never sent", c.n, seq))
		return
	}
	switch {
	case a.Version == wire.Failed:
		c.t.errored++
		c.t.example("errored", fmt.Sprintf("client %d message %d: %s", c.n, seq, a.Result))
		return
	case string(a.Result) != string(wire.Result(c.payload(seq))):
		c.t.wrong++
		c.t.example("wrong", fmt.Sprintf("client %d message %d: result %q, want %q", c.n, seq, a.Result, wire.Result(c.payload(seq))))
		return
	}
	c.t.answered++
	rtt := now.Sub(sent)
	c.t.rtt = append(c.t.rtt, rtt)
	if c.l.o.RecordSamples {
		c.t.samples = append(c.t.samples, Sample{Sent: sent, RTT: rtt})
	}
	c.t.versions[a.Version]++
	if _, seen := c.t.firstSeen[a.Version]; !seen {
		c.t.firstSeen[a.Version] = now
	}
}

func (c *client) parseID(id []byte) (uint64, error) {
	cs, ss, ok := strings.Cut(string(id), ".")
	if !ok || cs != strconv.Itoa(c.n) {
		return 0, fmt.Errorf("answer id %q is not one of this client's", id)
	}
	return strconv.ParseUint(ss, 10, 64)
}

// ended counts how a connection ended: by Stop (nothing to count), or by
// the server, with every message outstanding lost.
func (c *client) ended(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.out)
	for seq := range c.out {
		delete(c.out, seq)
		c.lost[seq] = true
	}
	c.t.lost += n
	if n > 0 {
		c.t.example("lost", fmt.Sprintf("client %d: %d messages outstanding when the connection ended: %v", c.n, n, err))
	}
	if c.closing.Load() {
		return // our own close
	}
	c.t.closedByServer++
	reason := "other"
	switch s := websocket.CloseStatus(err); {
	case s != -1:
		reason = fmt.Sprintf("%d %s", int(s), s)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		reason = "eof"
	case errors.Is(err, net.ErrClosed):
		reason = "closed"
	case strings.Contains(err.Error(), "connection reset"):
		reason = "reset"
	}
	c.t.closeReasons[reason]++
	c.t.example("closed "+reason, fmt.Sprintf("client %d: %v", c.n, err))
}

func (l *Load) merge() *Result {
	r := &Result{Clients: len(l.clients), CloseReasons: map[string]int{}, Versions: map[string]int{}, Examples: map[string]string{},
		Start: l.start}
	var rtt []time.Duration
	for _, c := range l.clients {
		c.mu.Lock()
		t := &c.t
		// Whatever is still outstanding after Stop's wait is lost.
		t.lost += len(c.out)
		if len(c.out) > 0 {
			t.example("lost", fmt.Sprintf("client %d: %d messages unanswered when the run stopped", c.n, len(c.out)))
		}
		r.Connections += t.connections
		r.ConnectErrors += t.connectErrors
		r.Sent += t.sent
		r.Answered += t.answered
		r.Errored += t.errored
		r.Wrong += t.wrong
		r.Lost += t.lost
		r.Late += t.late
		r.Duplicated += t.dupl
		r.ClosedByServer += t.closedByServer
		for k, v := range t.closeReasons {
			r.CloseReasons[k] += v
		}
		for k, v := range t.versions {
			r.Versions[k] += v
		}
		for k, v := range t.examples {
			r.Examples[k] = v
		}
		seen := make(map[string]time.Time, len(t.firstSeen))
		for k, v := range t.firstSeen {
			seen[k] = v
		}
		r.FirstSeen = append(r.FirstSeen, seen)
		rtt = append(rtt, t.rtt...)
		r.Samples = append(r.Samples, t.samples...)
		c.mu.Unlock()
	}
	slices.Sort(rtt)
	if n := len(rtt); n > 0 {
		r.P50, r.P99, r.Max = rtt[n/2], rtt[min(n-1, n*99/100)], rtt[n-1]
	}
	sort.Slice(r.Samples, func(i, j int) bool { return r.Samples[i].Sent.Before(r.Samples[j].Sent) })
	return r
}
