package shim

import (
	"time"

	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/shim/notify"
)

// event is anything the state goroutine reacts to.
type event interface{ isEvent() }

// exited: a worker process was reaped.
type exited struct {
	w      *worker
	status string   // "exit status 1", "signal: killed"
	code   int      // exit code, or -1 when killed by a signal
	tail   []string // last lines the worker wrote to stderr
}

// notified: a worker sent a notify datagram.
type notified struct {
	w   *worker
	msg notify.Message
}

// notifyRejected: a datagram on a worker's proxy socket was malformed or came
// from a process outside the worker.
type notifyRejected struct {
	w   *worker
	pid int
	err error
}

// probed: a delay passed or a ready_command succeeded.
type probed struct{ w *worker }

// readyTimedOut: a worker's ready_timeout passed.
type readyTimedOut struct{ w *worker }

// drainExpired: a draining worker's drain_timeout passed.
type drainExpired struct{ w *worker }

// respawnDue: a crashed worker's backoff ended.
type respawnDue struct {
	g  *group
	id int
}

// stopRequested: SIGTERM/SIGINT. force is set by a second signal.
type stopRequested struct{ force bool }

// reloadRequested: a caller wants a reload (control socket or SIGHUP).
type reloadRequested struct{ w *reloadWaiter }

// releaseDone: the workers draining at the end of a reload have closed the
// listening sockets, or the wait for that ended with held still holding one.
type releaseDone struct {
	r    *reloadRun
	held []int
	took time.Duration
}

// statusRequested: a caller wants a snapshot.
type statusRequested struct{ reply chan control.Status }

// watchdogTick: time to tell systemd the supervisor is alive.
type watchdogTick struct{}

func (reloadRequested) isEvent() {}
func (releaseDone) isEvent()     {}
func (statusRequested) isEvent() {}
func (watchdogTick) isEvent()    {}
func (exited) isEvent()          {}
func (notified) isEvent()        {}
func (notifyRejected) isEvent()  {}
func (probed) isEvent()          {}
func (readyTimedOut) isEvent()   {}
func (drainExpired) isEvent()    {}
func (respawnDue) isEvent()      {}
func (stopRequested) isEvent()   {}
