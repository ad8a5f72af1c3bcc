// Command sockshim-handoff is the trampoline through which sockshim starts
// every worker: it receives the worker's sockets over SCM_RIGHTS, sets up
// the socket-activation environment and execs the worker command, keeping
// its pid. It links only the handoff package, so it starts nearly as fast
// as a minimal Go program; sockshim runs it as
// `sockshim-handoff __trampoline -- COMMAND ARGS…` and nothing else should.
package main

import (
	"fmt"
	"os"

	"github.com/sockshim/sockshim/handoff"
)

// The trampoline runs in init: see handoff.Main.
func init() {
	if len(os.Args) > 1 && os.Args[1] == handoff.TrampolineArg {
		handoff.Main(os.Args[2:])
	}
}

func main() {
	fmt.Fprintf(os.Stderr, "%s: started by sockshim to exec its workers; not a command to run by hand\n", handoff.BinaryName)
	os.Exit(2)
}
