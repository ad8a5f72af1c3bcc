// Package shim is the supervisor: it holds the listening sockets, runs
// generations of worker processes through the handoff trampoline, tracks their
// readiness and reports to the service manager.
//
// One goroutine (Run) owns all supervisor state. Everything else — child
// exits, notify datagrams, readiness probes, timers, signals and control
// requests — arrives as an event on a channel, so no state is ever locked.
package shim
