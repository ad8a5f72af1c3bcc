package core

import (
	"time"

	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/notify"
)

// Event is anything the machine reacts to.
type Event interface{ isEvent() }

// WorkerID names one worker process for its whole life; the machine hands
// them out in start order, beginning at 1.
type WorkerID int

// TimerID names one timer the machine set.
type TimerID int

// WaiterID names one caller waiting for a reload's outcome. The executor
// hands them out.
type WaiterID int

// Boot starts generation 1.
type Boot struct{}

// Spawned: the Start effect for Worker succeeded; PID is the worker's pid.
type Spawned struct {
	Worker WorkerID
	PID    int
}

// SpawnFailed: the Start effect for Worker failed before any process ran.
type SpawnFailed struct {
	Worker WorkerID
	Err    error
}

// Exited: the worker's process was reaped.
type Exited struct {
	Worker WorkerID
	Status string   // "exit status 1", "signal: killed"
	Tail   []string // the last lines it wrote to stderr
}

// Notified: the worker (or a process of its group) sent a notify datagram.
type Notified struct {
	Worker WorkerID
	Msg    notify.Message
}

// Probed: the worker's ready_command exited 0, or (ready = "accepting") its
// processes wait for connections on every socket of its group they hold.
type Probed struct{ Worker WorkerID }

// HealthChecked: one run of a baking worker's health probe ended; Err is
// nil when it passed, else why it failed.
type HealthChecked struct {
	Worker WorkerID
	Err    error
}

// TimerFired: a timer set by SetTimer ran out. Firing late, or after the
// timer was cancelled, is harmless.
type TimerFired struct{ Timer TimerID }

// ReloadRequested: a caller (the control socket, or SIGHUP) wants a reload.
type ReloadRequested struct{ Waiter WaiterID }

// ConfigLoaded answers LoadConfig: the config a reload starts from, or why
// it could not be read.
type ConfigLoaded struct {
	Config *config.Config
	Err    error
}

// Released answers AwaitRelease: the draining workers of reload Gen closed
// the listening sockets, or Held still hold one after Took.
type Released struct {
	Gen  int
	Held []int
	Took time.Duration
}

// StopRequested: SIGTERM or SIGINT. Force (a second signal) kills at once.
type StopRequested struct{ Force bool }

func (Boot) isEvent()            {}
func (Spawned) isEvent()         {}
func (SpawnFailed) isEvent()     {}
func (Exited) isEvent()          {}
func (Notified) isEvent()        {}
func (Probed) isEvent()          {}
func (HealthChecked) isEvent()   {}
func (TimerFired) isEvent()      {}
func (ReloadRequested) isEvent() {}
func (ConfigLoaded) isEvent()    {}
func (Released) isEvent()        {}
func (StopRequested) isEvent()   {}
