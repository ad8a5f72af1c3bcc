// Package shim is the supervisor's executor: it holds the listening sockets,
// starts worker processes through the handoff trampoline, and carries out
// the effects of a core.Machine, which makes every decision.
//
// One goroutine (Run) owns the machine and the host-side state. Child exits,
// notify datagrams, probe results, timers, signals and control requests
// arrive on a channel and are stepped one at a time; an effect's outcome that
// is known at once (a spawn that failed) is queued and stepped after the
// step that caused it, never inside it. Nothing is locked.
package shim
