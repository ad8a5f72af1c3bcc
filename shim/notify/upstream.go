package notify

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Upstream reports sockshim's own state to the service manager named by
// NOTIFY_SOCKET. Without one (a standalone run) it does nothing.
//
// Send never blocks. A datagram send blocks while the receiver's queue is
// full, and a manager that is slow to read (or a NOTIFY_SOCKET nobody reads
// any more) must not stall the caller: the supervisor's state goroutine also
// reaps workers and answers the control socket. Messages go out in order from
// one goroutine, packed by pack while they wait, so the queue stays bounded by
// the state changes (READY, RELOADING, STOPPING) that must all arrive.
//
// Progress (STATUS, EXTEND_TIMEOUT_USEC) goes out at most once per
// ProgressGap, newest value per key: a reload changes the status line at
// every worker it starts, readies and drains, and each datagram costs the
// manager (PID 1 on a real machine) a wake-up, a unit update and a D-Bus
// signal, on the cores the service is serving from. A state change or a
// WATCHDOG=1 goes out at once, with the pending progress ahead of it or in
// it.
type Upstream struct {
	enabled bool
	send    func(state string) error
	log     *slog.Logger
	gap     time.Duration // ProgressGap; shorter in tests

	mu       sync.Mutex
	queue    [][]string // each a message of KEY=VALUE lines
	busy     bool       // the sender goroutine is running
	wake     chan struct{}
	flushing bool      // send progress without waiting for its gap
	lastSent time.Time // when the last datagram went out
	drained  chan struct{}
}

// ProgressGap is the least time between two datagrams when the later one
// carries only progress.
const ProgressGap = 200 * time.Millisecond

// NewUpstream captures whether sockshim runs under a notify-aware manager.
// The environment is left as it is; workers get theirs rebuilt explicitly.
func NewUpstream(log *slog.Logger) *Upstream {
	addr := os.Getenv("NOTIFY_SOCKET")
	conn := &managerConn{addr: &net.UnixAddr{Name: addr, Net: "unixgram"}}
	return &Upstream{enabled: addr != "", send: conn.send, log: log, gap: ProgressGap, wake: make(chan struct{}, 1)}
}

// managerConn is a datagram socket connected to the manager's notify
// socket once and kept: sd_notify(3)'s way, a socket, connect and close per
// message, cost sockshim more CPU than anything else it does per reload but
// starting workers. Only the sender goroutine uses it. A send that fails is
// retried once on a fresh socket, because the manager may have re-created
// its socket (daemon-reexec) since the last one.
type managerConn struct {
	addr *net.UnixAddr // "@name" is an abstract address
	c    *net.UnixConn
}

func (m *managerConn) send(state string) error {
	for attempt := 0; ; attempt++ {
		if m.c == nil {
			c, err := net.DialUnix("unixgram", nil, m.addr)
			if err != nil {
				return err
			}
			m.c = c
		}
		_, err := m.c.Write([]byte(state))
		if err == nil || attempt > 0 {
			return err
		}
		m.c.Close()
		m.c = nil
	}
}

// Enabled reports whether there is a manager to notify.
func (u *Upstream) Enabled() bool { return u != nil && u.enabled }

// progressKeys report progress: a newer value supersedes an older one, and
// they change no state, so they may be merged, delayed and packed together.
var progressKeys = map[string]bool{"STATUS": true, "EXTEND_TIMEOUT_USEC": true, "WATCHDOG": true}

// key is the variable a KEY=VALUE line sets.
func key(line string) string {
	k, _, _ := strings.Cut(line, "=")
	return k
}

func progressOnly(lines []string) bool {
	for _, l := range lines {
		if !progressKeys[key(l)] {
			return false
		}
	}
	return true
}

// mayWait reports whether a message may be held back for ProgressGap: it
// reports progress only, and no watchdog keep-alive, which a short
// WatchdogSec= would miss.
func mayWait(lines []string) bool { return progressOnly(lines) && !has(lines, "WATCHDOG") }

// has reports whether lines set k.
func has(lines []string, k string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return key(l) == k })
}

// without returns lines without those that set k.
func without(lines []string, k string) []string {
	var out []string
	for _, l := range lines {
		if key(l) != k {
			out = append(out, l)
		}
	}
	return out
}

// pack adds msg to a queue of unsent messages, in as few datagrams as keep
// what the manager makes of them. Two state changes are never joined:
// systemd acts on one of READY, RELOADING and STOPPING per datagram. Nor is
// EXTEND_TIMEOUT_USEC joined to a state change: systemd applies it after the
// state change, to the next state's timer (RuntimeMaxSec= once running).
func pack(queue [][]string, msg []string) [][]string {
	n := len(queue)
	if n == 0 {
		return append(queue, msg)
	}
	last := queue[n-1]
	switch {
	case progressOnly(last) && progressOnly(msg):
		queue[n-1] = merge(last, msg)
		return queue
	case len(msg) == 1 && has(msg, "STATUS"):
		// A newer status line for the state change still waiting.
		queue[n-1] = merge(last, msg)
		return queue
	case progressOnly(last) && has(msg, "STATUS"):
		// The state change brings its own status line.
		if last = without(last, "STATUS"); len(last) == 0 {
			queue = queue[:n-1]
		} else {
			queue[n-1] = last
		}
	}
	return append(queue, msg)
}

// Send queues one datagram made of the given KEY=VALUE lines.
func (u *Upstream) Send(lines ...string) { u.SendAll([][]string{lines}) }

// SendAll queues messages that arose together, such as the effects of one
// supervisor step, so that they are packed before any of them goes out.
func (u *Upstream) SendAll(msgs [][]string) {
	if !u.Enabled() || len(msgs) == 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, m := range msgs {
		u.queue = pack(u.queue, m)
	}
	if !u.busy {
		u.busy = true
		u.drained = make(chan struct{})
		go u.sender()
		return
	}
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// merge returns older with each key replaced by its value in newer.
func merge(older, newer []string) []string {
	out := make([]string, 0, len(older)+len(newer))
	for _, l := range older {
		if !has(newer, key(l)) {
			out = append(out, l)
		}
	}
	return append(out, newer...)
}

// sender writes queued messages until the queue is empty. Progress alone
// at the head of the queue waits until ProgressGap has passed since the
// last datagram, taking in newer progress meanwhile; a watchdog keep-alive
// packed into it, anything queued behind it, or a Flush sends it at once.
func (u *Upstream) sender() {
	for {
		u.mu.Lock()
		if len(u.queue) == 0 {
			u.busy = false
			close(u.drained)
			u.mu.Unlock()
			return
		}
		lines := u.queue[0]
		if wait := time.Until(u.lastSent.Add(u.gap)); wait > 0 && len(u.queue) == 1 && mayWait(lines) && !u.flushing {
			u.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-u.wake:
				t.Stop()
			}
			continue
		}
		u.queue = u.queue[1:]
		u.mu.Unlock()

		state := strings.Join(lines, "\n")
		if len(state) > 4000 {
			// systemd drops datagrams it cannot fit in its buffer; better a
			// shortened STATUS than no message at all.
			state = state[:4000]
		}
		if err := u.send(state); err != nil {
			u.log.Warn("notifying the service manager failed", "err", fmt.Errorf("sd_notify: %w", err))
		}
		u.mu.Lock()
		u.lastSent = time.Now()
		u.mu.Unlock()
	}
}

// Flush waits up to timeout for queued messages to be sent, so that a
// STOPPING=1 reaches the manager before the process exits. It reports
// whether everything went out. Progress is no longer held back after it.
func (u *Upstream) Flush(timeout time.Duration) bool {
	if !u.Enabled() {
		return true
	}
	u.mu.Lock()
	busy, drained := u.busy, u.drained
	u.flushing = true
	u.mu.Unlock()
	if !busy {
		return true
	}
	select {
	case u.wake <- struct{}{}:
	default:
	}
	select {
	case <-drained:
		return true
	case <-time.After(timeout):
		return false
	}
}
