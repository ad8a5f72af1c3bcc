package handoff

import "github.com/sockshim/sockshim/handoff/trampoline"

// TrampolineArg is the hidden argv[1] that starts a trampoline, the small
// binary or sockshim's own: `sockshim __trampoline -- COMMAND ARGS…`.
const TrampolineArg = trampoline.Arg

// HandoffFD is where the trampoline finds its end of the handoff socket
// (the first of exec.Cmd.ExtraFiles).
const HandoffFD = trampoline.HandoffFD

// Main is trampoline.Main, for sockshim's own binary as the trampoline:
// call it from an init of package main.
func Main(args []string) { trampoline.Main(args) }
