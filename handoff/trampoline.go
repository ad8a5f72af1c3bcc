package handoff

import "github.com/sockshim/sockshim/handoff/trampoline"

// TrampolineArg is the hidden argv[1] that starts a trampoline, the small
// binary or sockshim's own: `sockshim __trampoline [KEY=VALUE…] -- COMMAND
// ARGS…` (see trampoline.Arg).
const TrampolineArg = trampoline.Arg

// TrampolineArgs is trampoline.Args: the arguments after argv[0] and the
// environment of a trampoline that execs argv with the environment env.
func TrampolineArgs(argv, env []string) (args, trampolineEnv []string) {
	return trampoline.Args(argv, env)
}

// HandoffFD is where the trampoline finds its end of the handoff socket
// (the first of exec.Cmd.ExtraFiles).
const HandoffFD = trampoline.HandoffFD

// Main is trampoline.Main, for sockshim's own binary as the trampoline:
// call it from an init of package main.
func Main(args []string) { trampoline.Main(args) }
