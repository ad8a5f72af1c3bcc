// Package contain keeps every process that sockshim's children start within
// sockshim's reach when no delegated cgroup holds them, and reaps what the
// kernel hands to sockshim as a subreaper or a PID namespace's init.
//
// A Reaper makes sockshim a child subreaper (PR_SET_CHILD_SUBREAPER): a
// process whose parent dies is re-parented to sockshim instead of init, so a
// worker's daemonizing helper (fork, setsid, fork) ends up as sockshim's
// child, an orphan. The Reaper tells the processes sockshim started itself
// (through Start) from orphans, and
//
//   - reaps every orphan that exits, by its own pid (wait4 on that pid,
//     WNOHANG), never any child, so os/exec's Wait of a started process keeps
//     its exit status;
//   - gives each orphan owners: the started process it descended from, as
//     seen by the last sweep of the started processes' trees while they
//     lived; for an orphan no sweep saw (born and orphaned between two
//     sweeps), the started processes whose NOTIFY_SOCKET it inherited (every
//     worker has one of its own); failing that, every started process that
//     was alive when it started;
//   - kills an orphan, with everything below it, once none of its owners
//     is left, and kills every orphan at Close.
//
// A sweep runs on SIGCHLD, on every exit of a started process and once a
// second. The race between fork and registration: Start runs the fork and
// records the pid under the lock a sweep holds, so a sweep never sees a child
// of sockshim that it does not know, and a started process is forgotten only
// after its Wait returned. Killing a tree reads /proc and then signals by
// pid: a process that exits in between and whose pid is reused at once
// could be hit, the window of every pid-based kill(1).
package contain

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sockshim/sockshim/internal/procfs"
	"golang.org/x/sys/unix"
)

// sweepInterval bounds how long an orphan born and orphaned between two
// SIGCHLDs waits to be recorded.
const sweepInterval = time.Second

// proc names one process across pid reuse.
type proc struct {
	pid   int
	start uint64 // clock ticks since boot, procfs.Stat.StartTime
}

// lineageVar is the variable whose value a started process passes to all
// its descendants and shares with no other started process: each worker
// gets a notify socket of its own, and /proc/PID/environ of a descendant
// still shows it (the environment it was exec'd with).
const lineageVar = "NOTIFY_SOCKET"

// ended is a started process that is gone, kept while an orphan that is not
// yet known could have been born during its life.
type ended struct {
	proc
	end uint64
}

// Reaper is the subreaper's bookkeeping. Its methods are safe for
// concurrent use.
type Reaper struct {
	log  *slog.Logger
	self int

	mu      sync.Mutex
	started map[int]proc          // by pid: processes sockshim started, until Exited
	lineage map[int]string        // by pid: started processes' lineageVar, while started or in history
	history []ended               // started processes that are gone
	orphans map[proc]map[int]bool // orphan → pids of the started processes that own it
	origin  map[proc]map[int]bool // the last sweep's descendants of started processes and orphans → owners
	stop    chan struct{}
	closed  bool
}

// NewReaper makes the calling process a child subreaper and starts reaping.
func NewReaper(log *slog.Logger) (*Reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("becoming a child subreaper: %w", err)
	}
	r := &Reaper{log: log, self: os.Getpid(), started: map[int]proc{}, lineage: map[int]string{},
		orphans: map[proc]map[int]bool{}, origin: map[proc]map[int]bool{}, stop: make(chan struct{})}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		t := time.NewTicker(sweepInterval)
		defer t.Stop()
		defer signal.Stop(sigs)
		for {
			select {
			case <-sigs:
			case <-t.C:
			case <-r.stop:
				return
			}
			r.sweep()
		}
	}()
	// Orphans may already be waiting: the exit of a child before Notify.
	r.sweep()
	return r, nil
}

// Start starts cmd and records it as started by sockshim; call Exited with
// its pid once cmd.Wait returned.
func (r *Reaper) Start(cmd *exec.Cmd) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	p := proc{pid: cmd.Process.Pid}
	// Unreaped until its Wait, so /proc has it even if it already exited.
	if st, err := procfs.ReadStat(p.pid); err == nil {
		p.start = st.StartTime
	}
	r.started[p.pid] = p
	if v := envValue(cmd.Env, lineageVar); v != "" {
		r.lineage[p.pid] = v
	}
	return nil
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// Exited forgets a started process whose Wait returned, and kills the
// orphans it was the last owner of.
func (r *Reaper) Exited(pid int) {
	r.mu.Lock()
	if p, ok := r.started[pid]; ok {
		delete(r.started, pid)
		r.history = append(r.history, ended{proc: p, end: now()})
	}
	r.mu.Unlock()
	r.sweep()
}

// KillTree SIGKILLs every process descended from pid (not pid itself),
// deepest first, so that none of them is orphaned to init on the way.
func (r *Reaper) KillTree(pid int) int {
	killed := 0
	for range 3 { // a process forking while it is killed leaves a new child
		below := descendants(pid)
		if len(below) == 0 {
			break
		}
		for i := len(below) - 1; i >= 0; i-- {
			if unix.Kill(below[i].pid, unix.SIGKILL) == nil {
				killed++
			}
		}
	}
	return killed
}

// Close kills every orphan and its descendants, reaps them, and stops
// reaping. It waits at most timeout for them to exit and returns how many
// were still there.
func (r *Reaper) Close(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		left := r.sweep()
		if left == 0 || time.Now().After(deadline) {
			close(r.stop)
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sweep reaps orphans that exited, records the trees of the started
// processes and orphans, and kills the orphans nobody owns (all of them once
// closed). It returns how many orphans are left.
func (r *Reaper) sweep() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	kids, err := procfs.Children(r.self)
	if err != nil {
		r.log.Error("listing sockshim's children", "err", err)
		return 0
	}
	seen := map[proc]bool{}
	for _, pid := range kids {
		if _, ok := r.started[pid]; ok {
			continue
		}
		st, err := procfs.ReadStat(pid)
		if err != nil {
			continue
		}
		if st.State == 'Z' {
			var ws unix.WaitStatus
			if _, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err != nil && !errors.Is(err, unix.ECHILD) {
				r.log.Warn("reaping an orphan", "pid", pid, "err", err)
			}
			continue
		}
		o := proc{pid: pid, start: st.StartTime}
		seen[o] = true
		if _, known := r.orphans[o]; !known {
			owners := r.origin[o]
			if owners == nil {
				owners = r.sameLineage(pid)
			}
			if owners == nil {
				owners = r.aliveAt(o.start)
			}
			r.orphans[o] = owners
			r.log.Debug("adopted an orphan", "pid", pid, "command", procfs.Comm(pid), "owners", slices.Sorted(maps.Keys(owners)))
		}
	}
	origin := map[proc]map[int]bool{}
	for pid := range r.started {
		for _, d := range descendants(pid) {
			origin[d] = map[int]bool{pid: true}
		}
	}
	for o, owners := range r.orphans {
		if !seen[o] {
			delete(r.orphans, o) // reaped above, or killed and reaped before
			continue
		}
		for pid := range owners {
			if _, alive := r.started[pid]; !alive {
				delete(owners, pid)
			}
		}
		if len(owners) > 0 && !r.closed {
			for _, d := range descendants(o.pid) {
				origin[d] = owners
			}
			continue
		}
		n := r.KillTree(o.pid)
		if unix.Kill(o.pid, unix.SIGKILL) == nil {
			n++
		}
		r.log.Warn("killed a process a worker left behind, with its descendants", "pid", o.pid, "command", procfs.Comm(o.pid), "killed", n)
	}
	r.origin = origin
	r.prune()
	return len(r.orphans)
}

// sameLineage returns the started processes, current or gone, whose
// lineageVar the process pid inherited, or nil when it has none of theirs.
func (r *Reaper) sameLineage(pid int) map[int]bool {
	env, err := procfs.Environ(pid)
	if err != nil {
		return nil
	}
	v := envValue(env, lineageVar)
	if v == "" {
		return nil
	}
	var out map[int]bool
	for owner, w := range r.lineage {
		if w == v {
			if out == nil {
				out = map[int]bool{}
			}
			out[owner] = true // gone: removed again by the caller's sweep
		}
	}
	return out
}

// aliveAt returns the started processes, current or gone, that were alive
// at tick t. Ticks are coarse (10 ms), so both ends count.
func (r *Reaper) aliveAt(t uint64) map[int]bool {
	out := map[int]bool{}
	for pid, p := range r.started {
		if p.start <= t {
			out[pid] = true
		}
	}
	for _, e := range r.history {
		if e.start <= t && t <= e.end {
			out[e.pid] = true // gone: removed again by the caller's sweep
		}
	}
	return out
}

// prune drops gone processes that no future orphan can name as owner: a
// future orphan descends from a live started process or a current orphan,
// so it starts after the oldest of them.
func (r *Reaper) prune() {
	oldest := now()
	for _, p := range r.started {
		oldest = min(oldest, p.start)
	}
	for o := range r.orphans {
		oldest = min(oldest, o.start)
	}
	r.history = slices.DeleteFunc(r.history, func(e ended) bool { return e.end < oldest })
	for pid := range r.lineage {
		_, started := r.started[pid]
		if !started && !slices.ContainsFunc(r.history, func(e ended) bool { return e.pid == pid }) {
			delete(r.lineage, pid)
		}
	}
}

// descendants lists the processes below pid, parents before children.
func descendants(pid int) []proc {
	var out []proc
	for _, st := range procfs.Descendants(pid) {
		out = append(out, proc{pid: st.PID, start: st.StartTime})
	}
	return out
}

// now is the current time in /proc's start-time unit: clock ticks (USER_HZ,
// 100 on every Linux ABI) of CLOCK_BOOTTIME.
func now() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic(fmt.Sprintf("contain: clock_gettime(CLOCK_BOOTTIME): %v", err))
	}
	return uint64(ts.Sec)*100 + uint64(ts.Nsec)/10_000_000
}
