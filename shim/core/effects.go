package core

import (
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"time"

	"github.com/sockshim/sockshim/shim/config"
	"golang.org/x/sys/unix"
)

// Effect is something the executor must do.
type Effect interface{ fmt.Stringer }

// Start runs a new worker of group Config.Name in slot Slot of generation
// Gen. The executor answers with Spawned or SpawnFailed.
type Start struct {
	Worker WorkerID
	Config config.Worker
	Slot   int
	Gen    int
}

// Signal sends Signal to the worker's process (not its group: servers that
// master their own children drain those themselves).
type Signal struct {
	Worker WorkerID
	Signal syscall.Signal
}

// Kill SIGKILLs the worker's whole process group.
type Kill struct {
	Worker WorkerID
	Reason string
}

// SetTimer asks for TimerFired{Timer} after After.
type SetTimer struct {
	Timer TimerID
	After time.Duration
}

// CancelTimer says a timer is moot; the machine ignores it if it fires.
type CancelTimer struct{ Timer TimerID }

// StartProbe watches for the worker's readiness, by its ready_command or
// (ready = "accepting") by what its processes wait on, until it is ready
// (Probed) or StopProbe; the worker's ready_timeout bounds it in any case.
type StartProbe struct {
	Worker WorkerID
	PID    int
	Slot   int
	Gen    int
	Config config.Worker
}

// StartHealth runs the worker's health_command or health_url every
// Config.HealthInterval, each run bounded by it, answering each with
// HealthChecked, until StopProbe.
type StartHealth struct {
	Worker WorkerID
	PID    int
	Slot   int
	Gen    int
	Config config.Worker
}

// StopProbe ends a probe started by StartProbe or StartHealth. TimedOut
// says the worker's ready_timeout passed, so that a probe can say what it
// saw last; otherwise the worker became ready, exited or was let go.
type StopProbe struct {
	Worker   WorkerID
	TimedOut bool
}

// Notify sends lines to the service manager. Monotonic asks for a
// MONOTONIC_USEC= line read from the host's clock (RELOADING=1 wants one).
type Notify struct {
	Lines     []string
	Monotonic bool
}

// Progress is a line of news for callers waiting on a reload.
type Progress struct {
	Waiters []WaiterID
	Line    string
}

// Answer ends one caller's wait for a reload.
type Answer struct {
	Waiter  WaiterID
	Message string
	Err     error
}

// Log is a line for sockshim's log.
type Log struct {
	Level slog.Level
	Msg   string
	Attrs []any
}

// LoadConfig reads the config file; the executor answers with ConfigLoaded.
type LoadConfig struct{}

// AwaitRelease waits, off the machine, until no process of the workers'
// process groups holds a listening socket; the executor answers with
// Released{Gen}.
type AwaitRelease struct {
	Gen     int
	Workers []WorkerID
}

func (e Start) String() string {
	return fmt.Sprintf("start w%d %s[%d] gen %d", e.Worker, e.Config.Name, e.Slot, e.Gen)
}
func (e Signal) String() string {
	return fmt.Sprintf("signal w%d %s", e.Worker, unix.SignalName(e.Signal))
}
func (e Kill) String() string { return fmt.Sprintf("kill w%d (%s)", e.Worker, e.Reason) }
func (e SetTimer) String() string {
	return fmt.Sprintf("timer t%d in %s", e.Timer, e.After)
}
func (e CancelTimer) String() string { return fmt.Sprintf("cancel t%d", e.Timer) }
func (e StartProbe) String() string  { return fmt.Sprintf("probe w%d pid %d", e.Worker, e.PID) }
func (e StopProbe) String() string {
	if e.TimedOut {
		return fmt.Sprintf("stop probe w%d (timed out)", e.Worker)
	}
	return fmt.Sprintf("stop probe w%d", e.Worker)
}
func (e StartHealth) String() string {
	return fmt.Sprintf("health probe w%d pid %d every %s", e.Worker, e.PID, e.Config.HealthInterval)
}
func (e Notify) String() string {
	s := "notify " + strings.Join(e.Lines, " ")
	if e.Monotonic {
		s += " +MONOTONIC_USEC"
	}
	return s
}
func (e Progress) String() string {
	return fmt.Sprintf("progress %v: %s", e.Waiters, e.Line)
}
func (e Answer) String() string {
	if e.Err != nil {
		return fmt.Sprintf("answer %d error: %v", e.Waiter, e.Err)
	}
	return fmt.Sprintf("answer %d ok: %s", e.Waiter, e.Message)
}
func (e Log) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "log %s %s", e.Level, e.Msg)
	for i := 0; i+1 < len(e.Attrs); i += 2 {
		fmt.Fprintf(&b, " %v=%v", e.Attrs[i], e.Attrs[i+1])
	}
	return b.String()
}
func (LoadConfig) String() string { return "load config" }
func (e AwaitRelease) String() string {
	return fmt.Sprintf("await release gen %d %v", e.Gen, e.Workers)
}
