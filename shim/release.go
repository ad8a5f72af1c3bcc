package shim

import (
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/internal/cgroup"
	"github.com/sockshim/sockshim/internal/procfs"
	"golang.org/x/sys/unix"
)

// A worker told to drain keeps accepting until it handles its stop signal
// and closes its copies of the listening sockets, a few milliseconds later.
// A connection that arrives in that moment is still answered, but by the old
// code. So a reload is answered only once no draining process holds a
// listening socket any more: whoever ran `systemctl reload` can rely on new
// connections reaching the new generation. The wait is bounded, because a
// server may legitimately keep its listeners until its last request is done.
const (
	releaseTimeout = 2 * time.Second
	// Polls start fast, since a worker usually lets go within milliseconds,
	// and slow down, since each one reads /proc (see groupMembers).
	releaseFirstPoll = 2 * time.Millisecond
	releaseMaxPoll   = 100 * time.Millisecond
)

// socketIDs returns the sockets as /proc/PID/fd links name them.
func socketIDs(socks []handoff.Socket) (map[string]bool, error) {
	ids := map[string]bool{}
	for _, s := range socks {
		id, err := socketID(s)
		if err != nil {
			return nil, err
		}
		ids[id] = true
	}
	return ids, nil
}

// socketID returns the name /proc/PID/fd links give the socket
// ("socket:[INODE]"). fstat goes through SyscallConn: Fd() would switch the
// shared socket to blocking mode for every process.
func socketID(s handoff.Socket) (string, error) {
	raw, err := s.File.SyscallConn()
	if err != nil {
		return "", fmt.Errorf("socket %s: %w", s.Name, err)
	}
	var st unix.Stat_t
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return "", fmt.Errorf("socket %s: %w", s.Name, err)
	}
	if serr != nil {
		return "", fmt.Errorf("socket %s: fstat: %w", s.Name, serr)
	}
	return fmt.Sprintf("socket:[%d]", st.Ino), nil
}

// awaitRelease waits until none of the processes members returns (the
// draining workers and what they started) holds one of the listening
// sockets, or until timeout. It returns the pids still holding one.
func awaitRelease(members func() []int, sockets map[string]bool, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for poll := releaseFirstPoll; ; poll = min(2*poll, releaseMaxPoll) {
		held := holders(members(), sockets)
		if len(held) == 0 || time.Now().After(deadline) {
			return held
		}
		time.Sleep(min(poll, time.Until(deadline)))
	}
}

// holders lists the processes of pids that have one of the sockets open.
func holders(pids []int, sockets map[string]bool) []int {
	var out []int
	for _, pid := range pids {
		fds, err := procfs.FDs(pid)
		if err != nil {
			continue // gone, or not ours to inspect
		}
		for _, target := range fds {
			if sockets[target] {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// cgroupMembers lists the processes of the cgroups dirs, each a worker's
// own: everything it started, however it detached. A cgroup already removed
// has no members.
func cgroupMembers(dirs []string) []int {
	var out []int
	for _, dir := range dirs {
		pids, _ := cgroup.Procs(dir)
		out = append(out, pids...)
	}
	return out
}

// groupMembers lists the live processes of the process groups pgids, for
// workers without a cgroup of their own. sockshim is then their subreaper,
// so every process of those groups is in its own process tree: walking that
// tree costs what sockshim runs, where reading /proc/*/stat would cost what
// the whole host runs, at every poll.
func groupMembers(pgids []int) []int {
	var out []int
	for _, st := range procfs.Descendants(os.Getpid()) {
		if slices.Contains(pgids, st.PGID) {
			out = append(out, st.PID)
		}
	}
	return out
}
