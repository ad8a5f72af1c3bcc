// Command sockshim-handoff is the trampoline through which sockshim starts
// every worker: it receives the worker's sockets over SCM_RIGHTS, sets up
// the socket-activation environment and execs the worker command, keeping
// its pid. It links only package trampoline (neither fmt nor os/exec), so
// it starts about as fast as a Go program that only execs; sockshim runs it
// as `sockshim-handoff __trampoline [KEY=VALUE…] -- COMMAND ARGS…` and
// nothing else should.
package main

import (
	"os"

	"github.com/sockshim/sockshim/handoff/trampoline"
)

// The trampoline runs in init: see trampoline.Main.
func init() {
	if len(os.Args) > 1 && os.Args[1] == trampoline.Arg {
		trampoline.Main(os.Args[2:])
	}
}

func main() {
	os.Stderr.WriteString(trampoline.BinaryName + ": started by sockshim to exec its workers; not a command to run by hand\n")
	os.Exit(2)
}
