package handoff

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TrampolineArg is the hidden argv[1] that starts a trampoline, the small
// binary or sockshim's own: `sockshim __trampoline -- COMMAND ARGS…`.
const TrampolineArg = "__trampoline"

// HandoffFD is where the trampoline finds its end of the handoff socket
// (the first of exec.Cmd.ExtraFiles).
const HandoffFD = 3

// listenFDsStart is SD_LISTEN_FDS_START.
const listenFDsStart = 3

// Trampoline receives the sockets on HandoffFD, puts them at descriptors 3,
// 4, … in the order sent, sets LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (its
// own pid, which exec keeps, so it is the worker's), and execs argv. Every
// other descriptor above 2 is close-on-exec by then, so the worker starts
// with exactly stdin, stdout, stderr and its sockets. With no sockets, no
// LISTEN_* variable is set at all, as sd_listen_fds(3) expects. It returns
// only on failure.
func Trampoline(argv []string) error {
	parent := os.Getppid()
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("trampoline: no command")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("trampoline: %w", err)
	}
	conn := os.NewFile(HandoffFD, "handoff")
	socks, err := Receive(conn)
	if err != nil {
		return fmt.Errorf("trampoline: %w", err)
	}
	// Move every received socket above the target range first: received
	// numbers may fall inside 3…3+n-1, and the handoff socket itself is 3.
	n := len(socks)
	high := make([]int, n)
	for i, s := range socks {
		if err := withRawFD(s.File, func(fd int) error {
			var err error
			high[i], err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, listenFDsStart+n)
			return err
		}); err != nil {
			return fmt.Errorf("trampoline: moving socket %d: %w", i, err)
		}
		s.File.Close()
	}
	conn.Close()
	names := make([]string, n)
	for i, fd := range high {
		// Dup3 without O_CLOEXEC: these are the descriptors the worker keeps.
		if err := unix.Dup3(fd, listenFDsStart+i, 0); err != nil {
			return fmt.Errorf("trampoline: placing socket %d at fd %d: %w", i, listenFDsStart+i, err)
		}
		unix.Close(fd)
		names[i] = socks[i].Name
	}
	// Anything else this process holds (the Go runtime's epoll descriptor,
	// say) must not reach the worker; marking rather than closing keeps the
	// runtime working until exec.
	if err := unix.CloseRange(uint(listenFDsStart+n), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("trampoline: close_range: %w", err)
	}
	env := listenEnv(os.Environ(), os.Getpid(), names)
	// Set the signal again on this very thread and only then look at the
	// parent: if sockshim died before the prctl, getppid already shows it;
	// if it dies after, the signal fires.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("trampoline: setting the parent-death signal: %w", err)
	}
	if os.Getppid() != parent {
		return fmt.Errorf("trampoline: sockshim (pid %d) is gone; not starting %s", parent, path)
	}
	err = syscall.Exec(path, argv, env)
	return fmt.Errorf("trampoline: exec %s: %w", path, err)
}

// Main is a trampoline's main function, args being what follows
// TrampolineArg: it becomes the worker command or dies trying, with status
// 127, the shell's "command could not be run", which the supervisor reports
// as such.
//
// Call it from an init function of package main. The parent-death signal
// sockshim asks for is set on the thread that forked into this process, its
// main thread, and exec hands the new image the signal of the thread that
// calls it; the runtime runs every init on the main thread, while main may
// run on any thread unless locked to it, and runtime.LockOSThread starts a
// thread of its own (the runtime's template thread), which measurably
// slows this start.
func Main(args []string) {
	// Exec'd through ImagePath, the process would be named "4" in ps and
	// top until it becomes the worker.
	name, _ := unix.BytePtrFromString(BinaryName)
	unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(name)), 0, 0, 0)
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	err := Trampoline(args)
	fmt.Fprintf(os.Stderr, "sockshim: %v\n", err)
	os.Exit(127)
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
