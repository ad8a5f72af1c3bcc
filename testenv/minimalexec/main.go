// Command minimalexec execs its arguments and does nothing else: its cost,
// minus that of the program it execs, is the least any trampoline written in
// Go can cost, the floor under sockshim-handoff.
package main

import (
	"os"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		os.Exit(2)
	}
	err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	os.Stderr.WriteString("minimalexec: " + err.Error() + "\n")
	os.Exit(127)
}
