package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sockshim/sockshim/examples/gateway/wire"
)

// Pool sends requests to the business group over a few connections to the
// internal socket. Requests are pipelined: each carries an id of the pool's
// own, and answers are matched by id, so a connection carries many requests
// at once and answers may come in any order.
//
// The business group may close a connection at any time between answers (a
// draining worker does so after its current answer). The pool:
//   - dials a new connection when one has closed (lazily, on the next request);
//   - sends a request whose connection broke before its answer arrived again,
//     with the same id, on another connection: the business protocol answers
//     a request the same way every time, so sending twice is harmless;
//   - keeps the first answer per id and drops any later one, so the caller
//     never sees a request answered twice;
//   - never reports a backend problem to the caller before the caller's
//     context ends.
type Pool struct {
	Network, Address string
	Size             int           // connections kept open; default 8
	AttemptTimeout   time.Duration // an attempt without an answer for this long breaks its connection; default 3s
	DialRetry        time.Duration // how long a refused dial is retried; default 2s
	Log              *slog.Logger

	mu      sync.Mutex
	live    []*backend            // open, taking new requests
	all     map[*backend]struct{} // open, retired ones included
	dialing int
	changed chan struct{} // closed and replaced when live or dialing change
	pending map[uint64]*call
	nextID  uint64
	rr      int
	vacant  int // connections closed and not yet replaced
	closed  bool

	dials, redials, resends, duplicates, answered atomic.Int64
}

// PoolStats are the pool's counters.
type PoolStats struct {
	Conns      int   `json:"backend_conns"` // open, retired ones included
	Dials      int64 `json:"backend_dials"`
	Redials    int64 `json:"backend_redials"` // dials that replaced a closed connection
	Resends    int64 `json:"resends"`         // requests sent again after their connection broke
	Duplicates int64 `json:"duplicates_dropped"`
	Answered   int64 `json:"answered"`
}

type backend struct {
	conn        net.Conn
	wmu         sync.Mutex    // one writer at a time, so a line is never split
	dead        chan struct{} // closed once the connection failed or was closed
	isDead      bool          // guarded by Pool.mu, like the fields below
	retired     bool          // takes no new requests; closed when outstanding is 0
	outstanding int
}

type call struct {
	id   uint64
	on   *backend // the connection of the current attempt (Pool.mu)
	ans  wire.Answer
	done chan struct{} // closed with ans set
}

func (p *Pool) init() {
	if p.pending == nil {
		p.pending = map[uint64]*call{}
		p.all = map[*backend]struct{}{}
		p.changed = make(chan struct{})
		if p.Size <= 0 {
			p.Size = 8
		}
		if p.AttemptTimeout <= 0 {
			p.AttemptTimeout = 3 * time.Second
		}
		if p.DialRetry <= 0 {
			p.DialRetry = 2 * time.Second
		}
		if p.Log == nil {
			p.Log = slog.Default()
		}
	}
}

// Stats returns the pool's counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	n := len(p.all)
	p.mu.Unlock()
	return PoolStats{Conns: n, Dials: p.dials.Load(), Redials: p.redials.Load(), Resends: p.resends.Load(),
		Duplicates: p.duplicates.Load(), Answered: p.answered.Load()}
}

// Do sends payload to the business group and returns its answer. It tries
// until it has one or ctx ends.
func (p *Pool) Do(ctx context.Context, payload []byte) (wire.Answer, error) {
	p.mu.Lock()
	p.init()
	p.nextID++
	c := &call{id: p.nextID, done: make(chan struct{})}
	p.pending[c.id] = c
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, c.id)
		p.leave(c)
		p.mu.Unlock()
	}()

	line := strconv.AppendUint(make([]byte, 0, 24+len(payload)), c.id, 10)
	line = append(append(line, ' '), payload...)
	line = append(line, '\n')
	var lastErr error
	for sent := false; ; {
		b, err := p.get(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return wire.Answer{}, fmt.Errorf("no answer: %w (last: %v)", ctx.Err(), err)
			}
			lastErr = err
			if !sleep(ctx, 50*time.Millisecond) {
				return wire.Answer{}, fmt.Errorf("no answer: %w (last: %v)", ctx.Err(), lastErr)
			}
			continue
		}
		p.mu.Lock()
		switch {
		case c.ans.ID != nil: // answered on an earlier connection meanwhile
			p.mu.Unlock()
			return c.ans, nil
		case b.isDead || b.retired:
			p.mu.Unlock()
			continue
		}
		c.on = b
		b.outstanding++
		p.mu.Unlock()
		if sent {
			p.resends.Add(1)
		}
		sent = true
		if err := b.write(line, p.AttemptTimeout); err != nil {
			p.fail(b, fmt.Errorf("write: %w", err))
		}
		timer := time.NewTimer(p.AttemptTimeout)
		select {
		case <-c.done:
		case <-b.dead:
		case <-timer.C:
			p.fail(b, fmt.Errorf("no answer to request %d within %s", c.id, p.AttemptTimeout))
		case <-ctx.Done():
		}
		timer.Stop()
		select {
		case <-c.done: // an answer wins over a broken connection
			return c.ans, nil
		default:
		}
		if ctx.Err() != nil {
			return wire.Answer{}, fmt.Errorf("no answer: %w", ctx.Err())
		}
		p.mu.Lock()
		p.leave(c)
		p.mu.Unlock()
	}
}

// leave detaches c from the connection of its attempt. p.mu is held.
func (p *Pool) leave(c *call) {
	if b := c.on; b != nil {
		c.on = nil
		b.outstanding--
		if b.retired && b.outstanding == 0 {
			p.closeLocked(b, nil)
		}
	}
}

func (b *backend) write(line []byte, timeout time.Duration) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := b.conn.Write(line)
	return err
}

// get returns a connection for the next request: a new one while fewer than
// Size are open, else the next in turn.
func (p *Pool) get(ctx context.Context) (*backend, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errors.New("pool closed")
		}
		if len(p.live)+p.dialing < p.Size {
			p.dialing++
			p.mu.Unlock()
			conn, err := p.dial(ctx)
			p.mu.Lock()
			p.dialing--
			p.signal()
			if err != nil {
				p.mu.Unlock()
				return nil, err
			}
			b := &backend{conn: conn, dead: make(chan struct{})}
			if p.closed {
				p.mu.Unlock()
				conn.Close()
				return nil, errors.New("pool closed")
			}
			p.live = append(p.live, b)
			p.all[b] = struct{}{}
			p.dials.Add(1)
			if p.vacant > 0 {
				p.vacant--
				p.redials.Add(1)
			}
			p.mu.Unlock()
			go p.read(b)
			return b, nil
		}
		if n := len(p.live); n > 0 {
			p.rr++
			b := p.live[p.rr%n]
			p.mu.Unlock()
			return b, nil
		}
		wait := p.changed
		p.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// signal wakes the callers waiting in get. p.mu is held.
func (p *Pool) signal() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// dial connects to the internal socket. sockshim keeps that socket open
// across reloads, so a connect made while no business worker accepts waits
// in the socket's backlog instead of failing. A connect can still fail for a
// moment: ECONNREFUSED or ENOENT when the socket does not exist right now
// (sockshim itself restarting without a .socket unit, which rebinds it at
// once), EAGAIN when a unix socket's backlog is full (a non-blocking unix
// connect fails instead of waiting). A short bounded retry rides those out;
// a longer outage is reported to the caller, who retries until its deadline.
func (p *Pool) dial(ctx context.Context) (net.Conn, error) {
	deadline := time.Now().Add(p.DialRetry)
	delay := 10 * time.Millisecond
	for {
		d := net.Dialer{Timeout: p.AttemptTimeout}
		conn, err := d.DialContext(ctx, p.Network, p.Address)
		if err == nil {
			return conn, nil
		}
		transient := errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EAGAIN)
		if !transient || time.Now().After(deadline) {
			return nil, fmt.Errorf("dial business group: %w", err)
		}
		if !sleep(ctx, delay) {
			return nil, fmt.Errorf("dial business group: %w", ctx.Err())
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// read delivers the answers that arrive on b until it breaks or closes.
func (p *Pool) read(b *backend) {
	br := bufio.NewReaderSize(b.conn, wire.MaxMessage)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				err = fmt.Errorf("answer longer than %d bytes", wire.MaxMessage)
			}
			p.fail(b, err)
			return
		}
		ans, err := wire.ParseAnswer(bytes.TrimSuffix(line, []byte("\n")))
		var id uint64
		if err == nil {
			id, err = strconv.ParseUint(string(ans.ID), 10, 64)
		}
		if err != nil {
			p.fail(b, fmt.Errorf("bad answer from the business group: %w", err))
			return
		}
		p.deliver(id, ans)
	}
}

// deliver hands the first answer for id to its caller and drops any later
// one.
func (p *Pool) deliver(id uint64, ans wire.Answer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.pending[id]
	if c == nil || c.ans.ID != nil {
		p.duplicates.Add(1)
		return
	}
	// Copies: ans aliases the reader's buffer.
	c.ans = wire.Answer{ID: []byte(string(ans.ID)), Version: ans.Version, Result: []byte(string(ans.Result))}
	p.answered.Add(1)
	p.leave(c)
	close(c.done)
}

// fail closes b after an error; the requests outstanding on it are sent again
// by their callers.
func (p *Pool) fail(b *backend, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLocked(b, err)
}

// closeLocked closes b and takes it out of the pool. p.mu is held.
func (p *Pool) closeLocked(b *backend, err error) {
	if b.isDead {
		return
	}
	b.isDead = true
	close(b.dead)
	b.conn.Close()
	delete(p.all, b)
	for i, l := range p.live {
		if l == b {
			p.live = append(p.live[:i], p.live[i+1:]...)
			break
		}
	}
	p.vacant++
	p.signal()
	if err != nil && b.outstanding > 0 {
		p.Log.Info("backend connection broke; its requests are sent again", "outstanding", b.outstanding, "err", err)
	}
}

// Retire stops giving new requests to the open connections and closes each
// once its outstanding requests are answered, so that the next requests dial
// again and reach the workers accepting now (after a reload, the new
// generation).
func (p *Pool) Retire() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.init()
	old := p.live
	p.live = nil
	for _, b := range old {
		b.retired = true
		if b.outstanding == 0 {
			p.closeLocked(b, nil)
		}
	}
	p.signal()
	return len(old)
}

// Close closes every connection; calls in flight fail once their contexts
// end.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.init()
	p.closed = true
	for b := range p.all {
		p.closeLocked(b, nil)
	}
}
