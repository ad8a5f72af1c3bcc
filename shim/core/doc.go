// Package core holds every rule of the supervisor, free of processes,
// sockets and clocks.
//
// A Machine is a state machine: Step takes the current time and one Event
// (a worker was spawned, became ready, exited; a timer fired; a reload was
// requested; …) and returns the Effects that follow (start a worker, signal
// it, set a timer, tell the service manager, answer a caller, log). The
// executor in package shim carries the effects out against the real host and
// feeds their outcomes back as events, one at a time; nothing here calls
// time.Now, starts a process, sends a signal or arms a timer. So the rules of
// generations, rollouts, drains, respawns and reloads run in tests in
// microseconds: scripted in testdata/, and under randomized schedules checked
// against the invariants in invariants_test.go.
//
// Step is never re-entered: an effect's outcome, even one known at once (a
// spawn that fails synchronously), comes back as a later event. A rule
// therefore never observes a half-applied step of its own.
package core
