package shim

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/notify"
	"github.com/sockshim/sockshim/shim/sockets"
	"golang.org/x/sys/unix"
)

// workerState is where a worker is in its life. Transitions happen only on
// the state goroutine.
type workerState int

const (
	starting workerState = iota // started, not yet ready
	ready                       // serving
	draining                    // told to stop; finishing in-flight work
	gone                        // reaped
)

func (s workerState) String() string {
	return [...]string{"starting", "ready", "draining", "exited"}[s]
}

// worker is one process of one generation of a group.
type worker struct {
	group   *group
	cfg     config.Worker // the config it was started with
	id      int           // 0…count-1, stable across generations
	gen     int
	pid     int
	state   workerState
	started time.Time
	readyAt time.Time
	proxy   *notify.Proxy
	stderr  *stderrTail
	// timer is the pending ready_timeout or drain deadline; stopped on the
	// transition that makes it moot.
	timer *time.Timer
	// cancelProbe stops a running delay or command readiness check.
	cancelProbe func()
	// killed records why sockshim itself SIGKILLed the worker.
	killed string
	// failure says why the worker failed, for the reload's answer; tail is
	// what it last wrote to stderr.
	failure string
	tail    []string
	// status is the worker's own last STATUS= line.
	status string
	// rollingOut marks a worker of a reload that has not yet taken over
	// its slot.
	rollingOut bool
}

func (w *worker) String() string { return fmt.Sprintf("%s[%d]", w.cfg.Name, w.id) }

func (w *worker) live() bool { return w.state != gone }

func (w *worker) stopTimer() {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if w.cancelProbe != nil {
		w.cancelProbe()
		w.cancelProbe = nil
	}
}

// spawn starts one worker: the trampoline (sockshim's own binary in its
// internal mode) in a new process group, hands it the group's sockets over a
// SOCK_SEQPACKET pair, and arranges for its exit, notify datagrams and stderr
// to come back as events. The trampoline then execs the worker command, which
// keeps the pid, so w.pid is the worker's pid.
func (s *Supervisor) spawn(g *group, cfg config.Worker, id, gen int) (*worker, error) {
	w := &worker{group: g, cfg: cfg, id: id, gen: gen, state: starting}
	proxy, err := notify.Listen(fmt.Sprintf("%s.%d.g%d", cfg.Name, id, gen))
	if err != nil {
		return nil, err
	}
	w.proxy = proxy
	cmd, err := s.trampolineCmd(w)
	if err != nil {
		proxy.Close()
		return nil, err
	}
	parent, child, err := handoff.Pair()
	if err != nil {
		proxy.Close()
		return nil, err
	}
	defer parent.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		child.Close()
		proxy.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	// An *os.File as Stderr is passed straight to the child, so cmd.Wait does
	// not wait for the pipe: a grandchild holding it open cannot delay the
	// exit event.
	cmd.Stderr = errW
	cmd.ExtraFiles = []*os.File{child} // becomes handoff.HandoffFD (3)
	err = cmd.Start()
	child.Close()
	errW.Close()
	if err != nil {
		errR.Close()
		proxy.Close()
		return nil, fmt.Errorf("start %s: %w", w, err)
	}
	w.pid = cmd.Process.Pid
	w.started = s.now()
	w.stderr = newStderrTail(errR, s.stderr)
	if err := handoff.Send(parent, sockets.Select(s.sockets, cfg.Sockets)); err != nil {
		// The trampoline is blocked in Receive or already gone; either way
		// it must not run a worker without its sockets.
		_ = unix.Kill(-w.pid, unix.SIGKILL)
		s.log.Error("handing sockets to worker failed", "worker", w, "pid", w.pid, "err", err)
	}
	go proxy.Serve(
		func(m notify.Message) { s.post(notified{w: w, msg: m}) },
		func(pid int, err error) { s.post(notifyRejected{w: w, pid: pid, err: err}) },
	)
	go s.reap(w, cmd)
	return w, nil
}

// reap waits for the worker and reports its exit. It gives the stderr copier
// a moment to drain so the exit event carries the worker's last words, but
// never waits on a pipe a surviving grandchild might hold forever.
func (s *Supervisor) reap(w *worker, cmd *exec.Cmd) {
	err := cmd.Wait()
	select {
	case <-w.stderr.done:
	case <-time.After(200 * time.Millisecond):
	}
	ev := exited{w: w, status: "exit status 0", tail: w.stderr.Lines()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		ev.status = ee.ProcessState.String()
		ev.code = ee.ExitCode()
	default:
		ev.status = err.Error()
		ev.code = -1
	}
	s.post(ev)
}

func (s *Supervisor) trampolineCmd(w *worker) (*exec.Cmd, error) {
	cfg := w.cfg
	attr := &syscall.SysProcAttr{
		// Its own process group, so that a drain deadline can kill the
		// worker together with any children it forked.
		Setpgid: true,
		// Workers die with sockshim, however sockshim dies. (The signal is
		// tied to the forking thread; Go never retires threads that were not
		// locked with LockOSThread, and sockshim never locks one.)
		Pdeathsig: syscall.SIGKILL,
	}
	if cfg.User != "" || cfg.Group != "" {
		cred, err := credential(cfg.User, cfg.Group)
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", cfg.Name, err)
		}
		attr.Credential = cred
	}
	args := append([]string{"sockshim", handoff.TrampolineArg, "--"}, cfg.Command...)
	return &exec.Cmd{
		Path:        s.exe,
		Args:        args,
		Env:         workerEnv(s.baseEnv, cfg.Env, w.proxy.Addr(), w.gen, w.id, cfg.Name),
		Dir:         cfg.Dir,
		Stdout:      s.stdout,
		SysProcAttr: attr,
	}, nil
}

// credential resolves user/group names (or numeric ids) for a privilege drop.
// With only a user, its primary group and supplementary groups are used.
func credential(userName, groupName string) (*syscall.Credential, error) {
	cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	if userName != "" {
		u, err := lookupUser(userName)
		if err != nil {
			return nil, err
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred.Uid, cred.Gid = uint32(uid), uint32(gid)
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if n, err := strconv.ParseUint(id, 10, 32); err == nil {
					cred.Groups = append(cred.Groups, uint32(n))
				}
			}
		}
	}
	if groupName != "" {
		gr, err := user.LookupGroup(groupName)
		if err != nil {
			if gr, err = user.LookupGroupId(groupName); err != nil {
				return nil, fmt.Errorf("group %q: %w", groupName, err)
			}
		}
		gid, _ := strconv.ParseUint(gr.Gid, 10, 32)
		cred.Gid = uint32(gid)
		cred.Groups = []uint32{uint32(gid)}
	}
	return cred, nil
}

func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	if u, err2 := user.LookupId(name); err2 == nil {
		return u, nil
	}
	return nil, fmt.Errorf("user %q: %w", name, err)
}

// signal sends sig to the worker process itself: servers that are masters of
// their own children (gunicorn, uwsgi) drain those children on their own.
func (w *worker) signal(sig syscall.Signal) error {
	if err := unix.Kill(w.pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, w, w.pid, err)
	}
	return nil
}

// kill SIGKILLs the worker's whole process group. After the worker itself has
// exited this also removes children it left behind: nothing supervises those.
func (w *worker) kill() bool {
	return unix.Kill(-w.pid, unix.SIGKILL) == nil
}

// accepts reports whether a notify datagram from pid speaks for this worker:
// the worker itself or any process in its process group (a shell wrapper or a
// server's own child), like systemd's NotifyAccess=all scoped to the worker.
func (w *worker) accepts(pid int) bool {
	if pid <= 0 {
		return false
	}
	if pid == w.pid {
		return true
	}
	pgid, err := unix.Getpgid(pid)
	return err == nil && pgid == w.pid
}
