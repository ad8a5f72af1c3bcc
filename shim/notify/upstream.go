package notify

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
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
	return &Upstream{
		enabled: os.Getenv("NOTIFY_SOCKET") != "",
		send: func(state string) error {
			_, err := daemon.SdNotify(false, state)
			return err
		},
		log: log,
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
