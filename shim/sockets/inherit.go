package sockets

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/sockshim/sockshim/handoff"
	"golang.org/x/sys/unix"
)

// unknownName is what sd_listen_fds_with_names(3) calls a socket when the
// manager passed no LISTEN_FDNAMES.
const unknownName = "unknown"

// Inherit takes the sockets passed by the service manager and clears the
// LISTEN_* variables so nothing started later sees them. It returns no
// sockets and no error when none were passed. Passed sockets meant for another
// process (LISTEN_PID is not ours) are an error: systemd never does that, so
// something in between is confused and serving would be a guess.
func Inherit() ([]handoff.Socket, error) {
	fdsVar, pidVar := os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID")
	namesVar, hasNames := os.LookupEnv("LISTEN_FDNAMES")
	if fdsVar == "" {
		unsetListenEnv()
		return nil, nil
	}
	if pid, err := strconv.Atoi(pidVar); err != nil || pid != os.Getpid() {
		unsetListenEnv()
		return nil, fmt.Errorf("LISTEN_FDS=%s was passed for LISTEN_PID=%q, not for sockshim's pid %d", fdsVar, pidVar, os.Getpid())
	}
	n, err := strconv.Atoi(fdsVar)
	if err != nil || n < 0 {
		unsetListenEnv()
		return nil, fmt.Errorf("LISTEN_FDS=%q is not a count of descriptors", fdsVar)
	}
	if hasNames && len(strings.Split(namesVar, ":")) != n {
		unsetListenEnv()
		return nil, fmt.Errorf("LISTEN_FDNAMES=%q names %d sockets, LISTEN_FDS=%d", namesVar, len(strings.Split(namesVar, ":")), n)
	}
	for fd := listenFDsStart; fd < listenFDsStart+n; fd++ {
		if err := checkSocket(fd); err != nil {
			unsetListenEnv()
			return nil, fmt.Errorf("LISTEN_FDS=%d: %w", n, err)
		}
	}
	// activation.Files marks the descriptors close-on-exec and wraps them once;
	// the caller keeps the files referenced for the life of the process so the
	// garbage collector never closes a socket the service depends on.
	files := activation.Files(true)
	socks := make([]handoff.Socket, len(files))
	for i, f := range files {
		name := f.Name()
		if !hasNames || strings.HasPrefix(name, "LISTEN_FD_") {
			name = unknownName
		}
		socks[i] = handoff.Socket{Name: name, File: f}
	}
	return socks, nil
}

func unsetListenEnv() {
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
}

// listenFDsStart is SD_LISTEN_FDS_START.
const listenFDsStart = 3

// checkSocket fails unless fd is an open socket. A descriptor the manager
// did not really pass may be anything: closed, or reused by the Go runtime
// before main ran (it keeps a cgroup file open to follow CPU limits).
func checkSocket(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("descriptor %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		what, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			what = fmt.Sprintf("mode %#o", st.Mode&unix.S_IFMT)
		}
		return fmt.Errorf("descriptor %d is not a socket but %s", fd, what)
	}
	return nil
}
