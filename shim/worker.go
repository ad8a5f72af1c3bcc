package shim

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/handoff/wire"
	"github.com/sockshim/sockshim/internal/cgroup"
	"github.com/sockshim/sockshim/internal/contain"
	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/core"
	"github.com/sockshim/sockshim/shim/intercept"
	"github.com/sockshim/sockshim/shim/notify"
	"github.com/sockshim/sockshim/shim/sockets"
	"golang.org/x/sys/unix"
)

// proc is the host side of one worker: its process and what sockshim holds
// for it.
type proc struct {
	name    string // web[0], for logs
	pid     int
	process *os.Process // signals go through its pidfd, never a reused pid
	proxy   *notify.Proxy
	cg      *cgroup.Group // its own cgroup; nil when the subreaper contains it
}

// spawn starts one worker: the trampoline (sockshim-handoff, or sockshim's
// own binary in its internal mode) in a new process group, hands it the
// group's sockets over a SOCK_SEQPACKET pair, and arranges for its exit,
// notify datagrams and stderr to come back as events. The trampoline then
// execs the worker command, which keeps the pid. Every error says which step
// failed.
func (s *Supervisor) spawn(e core.Start) (*proc, error) {
	cfg := e.Config
	name := fmt.Sprintf("%s[%d]", cfg.Name, e.Slot)
	// The worker's credential, when it drops privileges; its notify
	// socket is writable by that uid only.
	var cred *syscall.Credential
	uid := os.Getuid()
	if cfg.User != "" || cfg.Group != "" {
		var err error
		if cred, err = config.Credential(cfg.User, cfg.Group); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		uid = int(cred.Uid)
	}
	proxy, err := notify.Listen(fmt.Sprintf("w%d", e.Worker), uid)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd := s.trampolineCmd(cfg, cred, proxy.Addr(), e.Slot, e.Gen)
	parent, child, err := handoff.Pair()
	if err != nil {
		proxy.Close()
		return nil, fmt.Errorf("%s: handoff socket pair: %w", name, err)
	}
	// With intercept_bind, the trampoline answers on the handoff socket
	// with the bind filter's listener, which serveBinds waits for.
	keepParent := false
	defer func() {
		if !keepParent {
			parent.Close()
		}
	}()
	errR, errW, err := stderrPipe()
	if err != nil {
		child.Close()
		proxy.Close()
		return nil, fmt.Errorf("%s: stderr pipe: %w", name, err)
	}
	// An *os.File as Stderr is passed straight to the child, so cmd.Wait does
	// not wait for the pipe: a grandchild holding it open cannot delay the
	// exit event.
	cmd.Stderr = errW
	cmd.ExtraFiles = []*os.File{child, s.trampoline.File} // handoff.HandoffFD, handoff.ImageFD
	var cg *cgroup.Group
	if s.cgroups != nil {
		// Born in its own cgroup (clone3 CLONE_INTO_CGROUP), so nothing it
		// forks, even at once, escapes cgroup.kill.
		if cg, err = s.cgroups.New(fmt.Sprintf("w%d", e.Worker)); err == nil {
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = cg.FD()
			err = cmd.Start()
			cg.Close()
		}
	} else {
		err = s.reaper.Start(cmd)
	}
	child.Close()
	errW.Close()
	if err != nil {
		errR.Close()
		proxy.Close()
		if cg != nil {
			s.removeCgroup(name, cg)
		}
		return nil, fmt.Errorf("%s: %w", name, startError(cfg, err))
	}
	p := &proc{name: name, pid: cmd.Process.Pid, process: cmd.Process, proxy: proxy, cg: cg}
	tail := newStderrTail(errR, s.stderr)
	socks, flags := sockets.Select(s.sockets, cfg.Sockets), byte(0)
	if cfg.InterceptBind {
		// The worker gets its sockets by binding their addresses, and no
		// LISTEN_FDS: a server that does not know them would keep them
		// open through its drain, and a reload would wait for it.
		socks, flags = nil, wire.FlagInterceptBind
	}
	if err := handoff.Send(parent, flags, socks); err != nil {
		// The trampoline is blocked in Receive or already gone; either way
		// it must not run a worker without its sockets. Its exit reports it.
		s.kill(p)
		s.log.Error("handing sockets to worker failed", "worker", name, "pid", p.pid, "err", err)
	} else if cfg.InterceptBind {
		keepParent = true
		go s.serveBinds(name, p.pid, parent, s.heldFor(cfg.Sockets))
	}
	id := e.Worker
	go proxy.Serve(
		func(pid int) bool { return accepts(p.pid, pid) },
		func(m notify.Message) { s.post(core.Notified{Worker: id, Msg: m}) },
		func(r notify.Rejection) { s.post(notifyRejected{w: id, r: r}) },
	)
	go s.reap(id, cmd, tail)
	return p, nil
}

// stderrPipe returns the pipe for a worker's stderr. Only the read end,
// which the tail's goroutine reads, goes to the runtime's poller; os.Pipe
// would register the write end too, and exec.Cmd would take it out again to
// hand it to the child, syscalls wasted on every worker start.
func stderrPipe() (r, w *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("pipe2: %w", err)
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, nil, fmt.Errorf("making the pipe's read end non-blocking: %w", err)
	}
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), nil
}

// explainLimit adds the descriptor limit to an error that ran into it, so
// the operator knows what to raise (LimitNOFILE= under systemd).
func explainLimit(err error) error {
	if !errors.Is(err, unix.EMFILE) {
		return err
	}
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return err
	}
	return fmt.Errorf("%w (sockshim's RLIMIT_NOFILE is %d; raise it, e.g. LimitNOFILE= in the unit)", err, rl.Cur)
}

// startError says why the trampoline could not be started; exec reports a
// missing working directory as if the binary were missing.
func startError(cfg config.Worker, err error) error {
	if cfg.Dir != "" {
		if _, serr := os.Stat(cfg.Dir); serr != nil {
			return fmt.Errorf("working directory: %w", serr)
		}
	}
	return fmt.Errorf("starting the trampoline: %w", err)
}

// reap waits for the worker and reports its exit; the reaper then kills
// what the worker left behind that no other worker may own. It gives the
// stderr copier a moment to drain so the exit event carries the worker's last
// words, but never waits on a pipe a surviving grandchild might hold forever.
func (s *Supervisor) reap(id core.WorkerID, cmd *exec.Cmd, tail *stderrTail) {
	err := waitExit(cmd, s.log)
	if s.reaper != nil {
		s.reaper.Exited(cmd.Process.Pid)
	}
	select {
	case <-tail.done:
	case <-time.After(200 * time.Millisecond):
	}
	ev := core.Exited{Worker: id, Status: "exit status 0", Tail: tail.Lines()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		ev.Status = ee.ProcessState.String()
	default:
		ev.Status = err.Error()
	}
	s.post(ev)
}

// waitExit waits for cmd's process to exit and reaps it, like cmd.Wait, but
// parks the goroutine on the runtime's poller until the process's pidfd
// becomes readable: cmd.Wait alone holds a thread in waitid(2) for the
// worker's whole life, and with one P each such call makes the runtime hand
// the P to another thread, waking threads sockshim pays for on every worker
// start. Only sockshim reaps its children, so the pid names this child until
// cmd.Wait. Should the poller be unavailable, cmd.Wait still waits.
func waitExit(cmd *exec.Cmd, log *slog.Logger) error {
	if err := awaitExit(cmd.Process.Pid); err != nil {
		log.Debug("waiting for an exit in waitid instead of on the poller", "pid", cmd.Process.Pid, "err", err)
	}
	return cmd.Wait()
}

// awaitExit returns once the child pid has exited, without reaping it.
func awaitExit(pid int) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	f := os.NewFile(uintptr(fd), "pidfd") // non-blocking, so on the poller
	defer f.Close()
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := conn.Read(func(fd uintptr) bool {
		// WNOWAIT leaves the zombie for cmd.Wait; si_signo is SIGCHLD only
		// once there is one.
		var info unix.Siginfo
		werr = unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		return werr != nil || info.Signo == int32(unix.SIGCHLD)
	}); err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("waitid: %w", werr)
	}
	return nil
}

func (s *Supervisor) trampolineCmd(cfg config.Worker, cred *syscall.Credential, notifyAddr string, slot, gen int) *exec.Cmd {
	attr := &syscall.SysProcAttr{
		// Its own process group, so that a drain deadline can kill the
		// worker together with any children it forked.
		Setpgid: true,
		// Workers die with sockshim, however sockshim dies. (The signal is
		// tied to the forking thread; Go never retires threads that were not
		// locked with LockOSThread, and sockshim never locks one.)
		Pdeathsig:  syscall.SIGKILL,
		Credential: cred,
	}
	env := workerEnv(s.baseEnv, cfg.Env, notifyAddr, gen, slot, cfg.Name)
	if s.instance != "" {
		env = append(env, contain.Marker+"="+s.instance)
	}
	args, env := handoff.TrampolineArgs(cfg.Command, env)
	return &exec.Cmd{
		Path:        handoff.ImagePath,
		Args:        append([]string{"sockshim"}, args...),
		Env:         env,
		Dir:         cfg.Dir,
		Stdin:       s.devNull,
		Stdout:      s.stdout,
		SysProcAttr: attr,
	}
}

// signal sends sig to the worker process itself: servers that are masters of
// their own children (gunicorn, uwsgi) drain those children on their own.
// Through the pidfd, a worker already reaped is never confused with a new
// process that got its pid.
func (p *proc) signal(sig syscall.Signal, log *slog.Logger) {
	if err := p.process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		log.Error("signalling worker failed", "worker", p.name, "pid", p.pid, "signal", sig, "err", err)
	}
}

// kill SIGKILLs the worker and everything it started. In a cgroup of its
// own, cgroup.kill does it at once. Otherwise the tree descended from it
// (also what left its process group with setsid) goes first, while the
// worker still holds it together; then the worker, through its pidfd; then
// its process group, whose id stays reserved while any member lives, so the
// group kill reaches only the worker's own children.
func (s *Supervisor) kill(p *proc) {
	if p.cg != nil {
		if err := p.cg.Kill(); err != nil {
			s.log.Error("killing worker's cgroup failed", "worker", p.name, "pid", p.pid, "err", err)
			_ = p.process.Signal(syscall.SIGKILL)
		}
		return
	}
	s.reaper.KillTree(p.pid)
	_ = p.process.Signal(syscall.SIGKILL)
	_ = unix.Kill(-p.pid, unix.SIGKILL)
}

// removeCgroup kills what is left in a worker's cgroup and removes it once
// empty, off Run's goroutine; Run waits for every removal before returning.
func (s *Supervisor) removeCgroup(name string, cg *cgroup.Group) {
	s.removals.Add(1)
	go func() {
		defer s.removals.Done()
		killed, err := cg.Remove(2 * time.Second)
		if killed {
			s.log.Warn("killed processes the worker left behind in its cgroup", "worker", name, "cgroup", cg.Dir)
		}
		if err != nil {
			s.log.Error("removing worker's cgroup", "worker", name, "err", err)
		}
	}()
}

// accepts reports whether a notify datagram from pid speaks for the worker
// whose pid is worker: the worker itself or any process in its process group
// (a shell wrapper or a server's own child), like systemd's NotifyAccess=all
// scoped to the worker.
func accepts(worker, pid int) bool {
	if pid <= 0 {
		return false
	}
	if pid == worker {
		return true
	}
	pgid, err := unix.Getpgid(pid)
	return err == nil && pgid == worker
}

// serveBinds waits for the bind filter's listener that the trampoline of
// worker pid sends on conn, and answers the worker's binds with held until
// no process of it is left. When the trampoline fails before it sends
// (it exits 127 and says why), there is nothing to serve.
func (s *Supervisor) serveBinds(name string, pid int, conn *os.File, held []intercept.Held) {
	got, _, err := handoff.Receive(conn)
	conn.Close()
	if err != nil {
		s.log.Debug("intercept_bind: no bind filter from the trampoline", "worker", name, "pid", pid, "err", err)
		return
	}
	if len(got) != 1 || got[0].Name != wire.ListenerName {
		for _, g := range got {
			g.File.Close()
		}
		s.log.Error("intercept_bind: the trampoline answered with something other than the bind filter's listener", "worker", name, "pid", pid, "sockets", len(got))
		return
	}
	intercept.NewServer(name, held, s.log).Serve(got[0].File)
}
