// Command sockshim supervises the worker processes of a socket-activated
// service so that reloads never refuse, reset or drop a request.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sockshim/sockshim/handoff"
)

const usage = `usage: sockshim COMMAND [options]

commands:
  run     [-c FILE]         supervise the workers of FILE (default: the embedded example)
  reload  [-c FILE]         reload the running supervisor; waits until the new generation serves
  status  [-c FILE] [-json] show generations, workers, pids, states
  check   -c FILE           validate FILE and exit
  version                   print version and build information

Run 'sockshim COMMAND -h' for a command's options.
`

// errUsage makes main print the usage text and exit 2.
var errUsage = errors.New("usage")

// Without sockshim-handoff beside it, sockshim is its own trampoline; it
// runs in init: see handoff.Main.
func init() {
	if len(os.Args) > 1 && os.Args[1] == handoff.TrampolineArg {
		handoff.Main(os.Args[2:])
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stderr)
	case "reload":
		err = cmdReload(args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "check":
		err = cmdCheck(args[1:], stdout, stderr)
	case "version", "--version":
		err = cmdVersion(stdout)
	case "example-worker":
		err = cmdExampleWorker(args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "sockshim: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "sockshim %s: %v\n", args[0], err)
		return 1
	}
}
