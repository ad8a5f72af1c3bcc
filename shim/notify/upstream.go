package notify

import (
	"fmt"
	"log/slog"
	"net"
	"os"
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
// one goroutine; while they wait, consecutive progress-only messages (STATUS,
// EXTEND_TIMEOUT_USEC, WATCHDOG) merge into one, newest value per key, so
// the queue stays bounded by the state changes (READY, RELOADING, STOPPING)
// that must all arrive.
type Upstream struct {
	enabled bool
	send    func(state string) error
	log     *slog.Logger

	mu      sync.Mutex
	queue   [][]string // each a message of KEY=VALUE lines
	busy    bool       // the sender goroutine is running
	drained chan struct{}
}

// NewUpstream captures whether sockshim runs under a notify-aware manager.
// The environment is left as it is; workers get theirs rebuilt explicitly.
func NewUpstream(log *slog.Logger) *Upstream {
	addr := os.Getenv("NOTIFY_SOCKET")
	conn := &managerConn{addr: &net.UnixAddr{Name: addr, Net: "unixgram"}}
	return &Upstream{enabled: addr != "", send: conn.send, log: log}
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

// progressKeys may be merged and superseded while waiting to be sent.
var progressKeys = map[string]bool{"STATUS": true, "EXTEND_TIMEOUT_USEC": true, "WATCHDOG": true}

func progressOnly(lines []string) bool {
	for _, l := range lines {
		k, _, _ := strings.Cut(l, "=")
		if !progressKeys[k] {
			return false
		}
	}
	return true
}

// Send queues one datagram made of the given KEY=VALUE lines.
func (u *Upstream) Send(lines ...string) {
	if !u.Enabled() {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if n := len(u.queue); n > 0 && progressOnly(lines) && progressOnly(u.queue[n-1]) {
		u.queue[n-1] = merge(u.queue[n-1], lines)
	} else {
		u.queue = append(u.queue, lines)
	}
	if !u.busy {
		u.busy = true
		u.drained = make(chan struct{})
		go u.sender()
	}
}

// merge returns older with each key replaced by its value in newer.
func merge(older, newer []string) []string {
	out := make([]string, 0, len(older)+len(newer))
	keys := map[string]bool{}
	for _, l := range newer {
		k, _, _ := strings.Cut(l, "=")
		keys[k] = true
	}
	for _, l := range older {
		if k, _, _ := strings.Cut(l, "="); !keys[k] {
			out = append(out, l)
		}
	}
	return append(out, newer...)
}

// sender writes queued messages until the queue is empty.
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
	}
}

// Flush waits up to timeout for queued messages to be sent, so that a
// STOPPING=1 reaches the manager before the process exits. It reports
// whether everything went out.
func (u *Upstream) Flush(timeout time.Duration) bool {
	if !u.Enabled() {
		return true
	}
	u.mu.Lock()
	busy, drained := u.busy, u.drained
	u.mu.Unlock()
	if !busy {
		return true
	}
	select {
	case <-drained:
		return true
	case <-time.After(timeout):
		return false
	}
}
