package contain

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/sockshim/sockshim/internal/procfs"
	"golang.org/x/sys/unix"
)

// Marker is the environment variable that ties a worker, and every process
// it starts (environments are inherited), to the supervisor instance that
// started it. Its value names the instance: its control socket's path.
const Marker = "SOCKSHIM_INSTANCE"

// KillLeftovers SIGKILLs every process but this one whose environment
// carries Marker=instance: what an earlier life of the same supervisor left
// behind when it was killed (the child of a shell-wrapped worker, which has
// no parent-death signal; a daemonized helper), still holding its sockets.
// Call it only once this process is known to be the instance's one live
// supervisor (it holds the control socket). It logs each process with its
// pid and command, waits at most timeout for them to go, and returns those
// still alive.
func KillLeftovers(log *slog.Logger, instance string, timeout time.Duration) ([]int, error) {
	pids, err := procfs.PIDs()
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	want := Marker + "=" + instance
	self := os.Getpid()
	var killed []int
	for _, pid := range pids {
		if pid == self || pid == 1 {
			continue
		}
		env, err := procfs.Environ(pid)
		if err != nil || !slices.Contains(env, want) {
			continue // gone, a kernel thread, or not ours to read
		}
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			continue
		}
		log.Warn("killed a process an earlier sockshim of this instance left behind", "pid", pid, "command", procfs.Comm(pid))
		killed = append(killed, pid)
	}
	deadline := time.Now().Add(timeout)
	for {
		killed = slices.DeleteFunc(killed, gone)
		if len(killed) == 0 || time.Now().After(deadline) {
			return killed, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gone reports whether pid no longer holds anything: it was reaped, or it is
// a zombie whose last thread exited too (a killed leader turns zombie while
// its other threads still share, and hold, the descriptor table).
func gone(pid int) bool {
	st, err := procfs.ReadStat(pid)
	if err != nil {
		return true
	}
	if st.State != 'Z' {
		return false
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	return err != nil || len(tasks) <= 1
}
