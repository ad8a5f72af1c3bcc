// Package trampoline is the process through which sockshim starts every
// worker: it receives the worker's sockets over the handoff socket, puts
// them where socket activation expects them and execs the worker command,
// keeping its pid. It links only package syscall and the wire format (no
// fmt, os, os/exec or golang.org/x/sys/unix), so that sockshim-handoff
// starts like a Go program that only execs (BENCHMARKS.md).
package trampoline

import (
	"errors"
	"strconv"
	"strings"
	"syscall"

	"github.com/sockshim/sockshim/handoff/wire"
)

// Arg is the hidden argv[1] that starts a trampoline, the small binary or
// sockshim's own: `sockshim __trampoline [KEY=VALUE…] -- COMMAND ARGS…`.
// The entries before -- are in the trampoline's environment for the
// trampoline alone; it removes them before it execs the command.
const Arg = "__trampoline"

// OwnEnv is what the trampoline's environment gets for the trampoline alone
// (see Args): one P, since it never runs two goroutines at once, and each
// further P costs it a thread to start and, at exec, to tear down: 0.37 ms
// of CPU time per start on 2 cores (2.64 against 2.26 ms for a start and
// exec of /bin/true, medians of 400, 2026-11-26).
var OwnEnv = []string{"GOMAXPROCS=1"}

// Args returns the arguments after argv[0] and the environment that start a
// trampoline for the command argv with the environment env. An entry of
// OwnEnv whose variable env sets already is left out, so that no variable
// is set twice: the process's view of its environment keeps only the first.
func Args(argv, env []string) (args, trampolineEnv []string) {
	var own []string
	for _, kv := range OwnEnv {
		key, _, _ := strings.Cut(kv, "=")
		if !hasKey(env, key) {
			own = append(own, kv)
		}
	}
	args = append(append([]string{Arg}, own...), "--")
	return append(args, argv...), append(own, env...)
}

func hasKey(env []string, key string) bool {
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); ok && k == key {
			return true
		}
	}
	return false
}

// BinaryName is the trampoline's own binary.
const BinaryName = "sockshim-handoff"

// HandoffFD is where the trampoline finds its end of the handoff socket
// (the first of exec.Cmd.ExtraFiles).
const HandoffFD = 3

// listenFDsStart is SD_LISTEN_FDS_START.
const listenFDsStart = 3

// Main is a trampoline's main function, args being what follows Arg: it
// becomes the worker command or dies trying, with status 127, the shell's
// "command could not be run", which the supervisor reports as such.
//
// Call it from an init function of package main. The parent-death signal
// sockshim asks for is set on the thread that forked into this process, its
// main thread, and exec hands the new image the signal of the thread that
// calls it; the runtime runs every init on the main thread, while main may
// run on any thread unless locked to it, and runtime.LockOSThread starts a
// thread of its own (the runtime's template thread), which measurably
// slows this start.
func Main(args []string) {
	// Exec'd through the image descriptor, the process would be named "4"
	// in ps and top until it becomes the worker.
	setName(BinaryName)
	var own []string
	for i, a := range args {
		if a == "--" {
			own, args = args[:i], args[i+1:]
			break
		}
	}
	env, err := withoutOwn(syscall.Environ(), own)
	if err == nil {
		err = Exec(args, env)
	}
	syscall.Write(2, []byte("sockshim: "+err.Error()+"\n"))
	syscall.Exit(127)
}

// withoutOwn returns env without the entries own, each of which must be in
// it: they were put there for the trampoline alone.
func withoutOwn(env, own []string) ([]string, error) {
	for _, kv := range own {
		i := 0
		for i < len(env) && env[i] != kv {
			i++
		}
		if i == len(env) {
			return nil, errors.New("trampoline: " + strconv.Quote(kv) + " is not in its environment")
		}
		env = append(env[:i:i], env[i+1:]...)
	}
	return env, nil
}

// Exec receives the sockets on HandoffFD, puts them at descriptors 3, 4, …
// in the order sent, sets LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (its
// own pid, which exec keeps, so it is the worker's) in env, and execs argv
// with it. Every other descriptor above 2 is close-on-exec by then, so the
// worker starts with exactly stdin, stdout, stderr and its sockets. With no
// sockets, no LISTEN_* variable is set at all, as sd_listen_fds(3) expects.
// A handoff with wire.FlagInterceptBind (which carries no sockets) installs
// the bind filter first, on this thread, and answers with its listener.
// It returns only on failure.
func Exec(argv, env []string) error {
	parent := syscall.Getppid()
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("trampoline: no command")
	}
	path, err := lookPath(argv[0])
	if err != nil {
		return errors.New("trampoline: " + err.Error())
	}
	fds, names, flags, err := wire.Receive(HandoffFD)
	if err != nil {
		return errors.New("trampoline: handoff: " + err.Error())
	}
	if flags&wire.FlagInterceptBind != 0 {
		if err := interceptBind(HandoffFD); err != nil {
			return errors.New("trampoline: intercept_bind: " + err.Error())
		}
	}
	// Move every received socket above the target range first: received
	// numbers may fall inside 3…3+n-1, and the handoff socket itself is 3.
	n := len(fds)
	for i, fd := range fds {
		high, err := dupCloexec(fd, listenFDsStart+n)
		if err != nil {
			return errors.New("trampoline: moving socket " + strconv.Itoa(i) + ": " + err.Error())
		}
		syscall.Close(fd)
		fds[i] = high
	}
	syscall.Close(HandoffFD)
	for i, fd := range fds {
		// Dup3 without O_CLOEXEC: these are the descriptors the worker keeps.
		if err := syscall.Dup3(fd, listenFDsStart+i, 0); err != nil {
			return errors.New("trampoline: placing socket " + strconv.Itoa(i) + " at fd " + strconv.Itoa(listenFDsStart+i) + ": " + err.Error())
		}
		syscall.Close(fd)
	}
	// Anything else this process holds (the Go runtime's descriptors, say)
	// must not reach the worker; marking rather than closing keeps the
	// runtime working until exec.
	if err := cloexecFrom(listenFDsStart + n); err != nil {
		return errors.New("trampoline: close_range: " + err.Error())
	}
	env = listenEnv(env, syscall.Getpid(), names)
	// Set the signal again on this very thread and only then look at the
	// parent: if sockshim died before the prctl, getppid already shows it;
	// if it dies after, the signal fires.
	if err := prctl(syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL)); err != nil {
		return errors.New("trampoline: setting the parent-death signal: " + err.Error())
	}
	if syscall.Getppid() != parent {
		return errors.New("trampoline: sockshim (pid " + strconv.Itoa(parent) + ") is gone; not starting " + path)
	}
	err = syscall.Exec(path, argv, env)
	return errors.New("trampoline: exec " + path + ": " + err.Error())
}

// listenEnv replaces any LISTEN_* variables in env with the ones describing
// names at fds 3…, for process pid.
func listenEnv(env []string, pid int, names []string) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		if strings.HasPrefix(kv, "LISTEN_") {
			continue
		}
		out = append(out, kv)
	}
	if len(names) == 0 {
		return out
	}
	return append(out,
		"LISTEN_PID="+strconv.Itoa(pid),
		"LISTEN_FDS="+strconv.Itoa(len(names)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"),
	)
}
