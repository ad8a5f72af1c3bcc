package shim

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/internal/cgroup"
	"github.com/sockshim/sockshim/internal/contain"
	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/shim/core"
	"github.com/sockshim/sockshim/shim/intercept"
	"github.com/sockshim/sockshim/shim/notify"
	"github.com/sockshim/sockshim/shim/sockets"
)

// Options configure a Supervisor. Config and Sockets are required.
type Options struct {
	Config  *config.Config
	Sockets []handoff.Socket // kept open, and referenced, for the supervisor's life
	Logger  *slog.Logger     // default slog.Default()
	// Upstream reports to the service manager; default notify.NewUpstream.
	Upstream *notify.Upstream
	// Trampoline is the binary every worker is exec'd through, opened
	// once (handoff.OpenBinary); default: the one found beside sockshim's
	// executable.
	Trampoline *handoff.Binary
	// Stdout and Stderr receive the workers' output; default sockshim's own,
	// so journald files it under the unit.
	Stdout, Stderr *os.File
	// LoadConfig re-reads the config on reload; default config.Load of
	// Config.Path.
	LoadConfig func() (*config.Config, error)
	// Instance names this supervisor in its workers' environment
	// (contain.Marker), so that a later life finds what this one left
	// behind; empty: not set.
	Instance string
}

// Supervisor is the executor of a core.Machine: it carries the machine's
// effects out on the host (processes, signals, timers, the notify socket)
// and feeds their outcomes back as events. Run's goroutine owns the machine
// and everything below the line in the struct; other goroutines only post.
type Supervisor struct {
	log            *slog.Logger
	up             *notify.Upstream
	trampoline     *handoff.Binary
	stdout, stderr *os.File
	devNull        *os.File // every worker's stdin, opened once rather than by each exec.Cmd
	baseEnv        []string
	sockets        []handoff.Socket
	socketIDs      map[string]bool  // the sockets as /proc/PID/fd names them
	held           []intercept.Held // the sockets as intercept_bind matches binds against them
	heldErr        error            // why held could not be read, reported by checkIntercept
	backlogs       map[string]int   // listen(2) backlogs of the sockets sockshim bound, by name
	loadConfig     func() (*config.Config, error)
	instance       string
	cgroups        *cgroup.Tree    // delegated: each worker in a cgroup of its own
	reaper         *contain.Reaper // not delegated: every process sockshim starts goes through it
	removals       sync.WaitGroup  // workers' cgroups being emptied and removed
	inputs         chan any        // core.Event, or one of the requests below
	done           chan struct{}

	m          *core.Machine
	watcher    *sockets.Watcher // nil when the sockets could not be watched
	queue      []core.Event     // outcomes known at once, stepped before the next input
	notes      [][]string       // the step's Notify lines, sent together so they can be packed
	procs      map[core.WorkerID]*proc
	timers     map[core.TimerID]*time.Timer
	probes     map[core.WorkerID]context.CancelCauseFunc
	waiters    map[core.WaiterID]*reloadWaiter
	lastWaiter core.WaiterID
}

// Requests from other goroutines that are not events of the machine.
type (
	reloadRequested struct{ w *reloadWaiter }
	statusRequested struct{ reply chan control.Status }
	watchdogTick    struct{}
	notifyRejected  struct {
		w core.WorkerID
		r notify.Rejection
	}
)

// reloadWaiter is one caller waiting for a reload's outcome.
type reloadWaiter struct {
	lines  chan string // progress; dropped when the caller is slow
	result chan core.Answer
}

// New checks that the config's worker groups can be served from the given
// sockets and prepares a supervisor. It starts nothing.
func New(o Options) (*Supervisor, error) {
	if o.Config == nil {
		return nil, fmt.Errorf("shim: no config")
	}
	if err := o.Config.CheckSocketNames(sockets.Names(o.Sockets)); err != nil {
		return nil, err
	}
	held, heldErr := intercept.Describe(o.Sockets)
	s := &Supervisor{
		log:        o.Logger,
		up:         o.Upstream,
		trampoline: o.Trampoline,
		stdout:     o.Stdout,
		stderr:     o.Stderr,
		baseEnv:    os.Environ(),
		sockets:    o.Sockets,
		held:       held,
		heldErr:    heldErr,
		backlogs:   map[string]int{},
		loadConfig: o.LoadConfig,
		instance:   o.Instance,
		inputs:     make(chan any, 64),
		done:       make(chan struct{}),
		m:          core.New(o.Config),
		procs:      map[core.WorkerID]*proc{},
		timers:     map[core.TimerID]*time.Timer{},
		probes:     map[core.WorkerID]context.CancelCauseFunc{},
		waiters:    map[core.WaiterID]*reloadWaiter{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if err := s.checkIntercept(o.Config); err != nil {
		return nil, err
	}
	for _, l := range o.Config.Listen {
		s.backlogs[l.Name] = l.Backlog
	}
	if s.trampoline == nil {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locating sockshim's own binary: %w", err)
		}
		if s.trampoline, err = handoff.OpenBinary(self); err != nil {
			return nil, err
		}
	}
	if s.trampoline.Own {
		s.log.Info("workers start through sockshim's own binary; install "+handoff.BinaryName+" beside it for faster starts", "trampoline", s.trampoline.Path)
	} else {
		s.log.Info("workers start through "+handoff.BinaryName, "trampoline", s.trampoline.Path)
	}
	if err := s.contain(); err != nil {
		return nil, err
	}
	if ids, err := socketIDs(o.Sockets); err != nil {
		s.log.Warn("reloads will not wait for old workers to release the sockets", "err", err)
	} else {
		s.socketIDs = ids
	}
	if s.up == nil {
		s.up = notify.NewUpstream(s.log)
	}
	if s.stdout == nil {
		s.stdout = os.Stdout
	}
	if s.stderr == nil {
		s.stderr = os.Stderr
	}
	if s.loadConfig == nil {
		path := o.Config.Path
		s.loadConfig = func() (*config.Config, error) { return config.Load(path) }
	}
	var err error
	if s.devNull, err = os.Open(os.DevNull); err != nil {
		return nil, fmt.Errorf("opening the workers' stdin: %w", err)
	}
	return s, nil
}

// Stop asks the supervisor to drain every worker and return from Run. A
// forced stop SIGKILLs the workers at once (the second SIGINT or SIGTERM of
// an operator who does not want to wait).
func (s *Supervisor) Stop(force bool) { s.post(core.StopRequested{Force: force}) }

// Reload starts a reload, or joins the next one if a reload is running, and
// waits for its end. progress receives a line per step; it runs on the
// caller's goroutine, so a slow client never stalls the supervisor.
func (s *Supervisor) Reload(ctx context.Context, progress func(string)) (string, error) {
	w := &reloadWaiter{lines: make(chan string, 256), result: make(chan core.Answer, 1)}
	s.post(reloadRequested{w: w})
	for {
		select {
		case line := <-w.lines:
			if progress != nil {
				progress(line)
			}
		case r := <-w.result:
			for len(w.lines) > 0 {
				if line := <-w.lines; progress != nil {
					progress(line)
				}
			}
			return r.Message, r.Err
		case <-s.done:
			return "", fmt.Errorf("sockshim stopped before the reload ended")
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// Status returns a snapshot of the supervisor's state.
func (s *Supervisor) Status(ctx context.Context) (control.Status, error) {
	reply := make(chan control.Status, 1)
	s.post(statusRequested{reply: reply})
	select {
	case st := <-reply:
		return st, nil
	case <-s.done:
		return control.Status{}, fmt.Errorf("sockshim is stopping")
	case <-ctx.Done():
		return control.Status{}, ctx.Err()
	}
}

// post delivers an input to Run's goroutine, or drops it once Run has
// returned, so timers and reapers that fire late never block forever.
func (s *Supervisor) post(in any) {
	select {
	case s.inputs <- in:
	case <-s.done:
	}
}

// Run starts generation 1 and handles inputs until a stop has reaped every
// worker.
func (s *Supervisor) Run() error {
	defer close(s.done)
	s.log.Info("sockets held", "count", len(s.sockets))
	if w, err := sockets.Watch(s.sockets, s.backlogs, s.socketShutDown); err != nil {
		s.log.Warn("a socket shut down by a worker will not be repaired", "err", err)
	} else {
		s.watcher = w
		defer w.Close()
	}
	s.startWatchdog()
	s.step(core.Boot{})
	for !s.m.Done() {
		switch in := (<-s.inputs).(type) {
		case core.Event:
			s.step(in)
		case reloadRequested:
			s.lastWaiter++
			s.waiters[s.lastWaiter] = in.w
			s.step(core.ReloadRequested{Waiter: s.lastWaiter})
		case statusRequested:
			st := s.m.Status(time.Now())
			st.PID = os.Getpid()
			s.addUsage(&st)
			st.Counters.Sockets = s.socketCounters()
			in.reply <- st
		case watchdogTick:
			// Answering at all proves this goroutine is not wedged.
			s.up.Send("WATCHDOG=1")
		case notifyRejected:
			s.log.Warn("notify datagrams dropped", "worker_id", in.w, "count", in.r.Count,
				"last_sender_pid", in.r.PID, "last_err", in.r.Err)
		}
	}
	for _, t := range s.timers {
		t.Stop()
	}
	// Every worker is gone; what they left behind goes now.
	if s.reaper != nil {
		if left := s.reaper.Close(2 * time.Second); left > 0 {
			s.log.Error("processes the workers left behind survived SIGKILL for 2s", "count", left)
		}
	}
	s.removals.Wait()
	s.devNull.Close()
	if !s.up.Flush(2 * time.Second) {
		s.log.Warn("the service manager did not take our last notifications within 2s")
	}
	s.log.Info("stopped")
	return nil
}

// step hands ev to the machine and carries out its effects; outcomes known
// at once queue up and are stepped in order after it, never inside it.
func (s *Supervisor) step(ev core.Event) {
	s.queue = append(s.queue, ev)
	for len(s.queue) > 0 {
		ev := s.queue[0]
		s.queue = s.queue[1:]
		switch ev := ev.(type) {
		case core.Exited:
			s.reaped(ev.Worker)
		case core.TimerFired:
			delete(s.timers, ev.Timer)
		}
		for _, e := range s.m.Step(time.Now(), ev) {
			s.apply(e)
		}
	}
	s.up.SendAll(s.notes)
	s.notes = s.notes[:0]
}

func (s *Supervisor) apply(e core.Effect) {
	switch e := e.(type) {
	case core.Start:
		p, err := s.spawn(e)
		if err != nil {
			s.queue = append(s.queue, core.SpawnFailed{Worker: e.Worker, Err: explainLimit(err)})
			return
		}
		s.procs[e.Worker] = p
		s.queue = append(s.queue, core.Spawned{Worker: e.Worker, PID: p.pid})
	case core.Signal:
		if p := s.procs[e.Worker]; p != nil {
			p.signal(e.Signal, s.log)
		}
	case core.Kill:
		if p := s.procs[e.Worker]; p != nil {
			s.kill(p)
		}
	case core.SetTimer:
		id := e.Timer
		s.timers[id] = time.AfterFunc(e.After, func() { s.post(core.TimerFired{Timer: id}) })
	case core.CancelTimer:
		if t := s.timers[e.Timer]; t != nil {
			t.Stop()
			delete(s.timers, e.Timer)
		}
	case core.StartProbe:
		ctx, cancel := probeContext(e.Config.ReadyTimeout)
		s.probes[e.Worker] = cancel
		if e.Config.Ready == config.ReadyAccepting {
			go s.acceptLoop(ctx, e, s.membersOf([]core.WorkerID{e.Worker}), sockets.Select(s.sockets, e.Config.Sockets))
		} else {
			go s.probeLoop(ctx, e)
		}
	case core.StartHealth:
		ctx, cancel := context.WithCancelCause(context.Background())
		s.probes[e.Worker] = cancel
		go s.healthLoop(ctx, e)
	case core.StopProbe:
		if cancel := s.probes[e.Worker]; cancel != nil {
			var cause error
			if e.TimedOut {
				cause = errReadyTimeout
			}
			cancel(cause)
			delete(s.probes, e.Worker)
		}
	case core.Notify:
		lines := e.Lines
		if e.Monotonic {
			lines = append(lines, strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
		}
		s.notes = append(s.notes, lines)
	case core.Progress:
		for _, id := range e.Waiters {
			if w := s.waiters[id]; w != nil {
				select {
				case w.lines <- e.Line:
				default:
				}
			}
		}
	case core.Answer:
		if w := s.waiters[e.Waiter]; w != nil {
			w.result <- e
			delete(s.waiters, e.Waiter)
		}
	case core.Log:
		s.log.Log(context.Background(), e.Level, e.Msg, e.Attrs...)
	case core.LoadConfig:
		cfg, err := s.loadConfig()
		if err == nil {
			err = cfg.CheckSocketNames(sockets.Names(s.sockets))
		}
		if err == nil {
			err = s.checkIntercept(cfg)
		}
		s.queue = append(s.queue, core.ConfigLoaded{Config: cfg, Err: err})
	case core.AwaitRelease:
		s.awaitRelease(e)
	default:
		panic(fmt.Sprintf("shim: unknown effect %T", e))
	}
}

// awaitRelease waits, off Run's goroutine, until the draining workers and
// everything they started no longer hold a listening socket (see
// release.go).
func (s *Supervisor) awaitRelease(e core.AwaitRelease) {
	members := s.membersOf(e.Workers)
	if members == nil || s.socketIDs == nil {
		s.queue = append(s.queue, core.Released{Gen: e.Gen})
		return
	}
	ids := s.socketIDs
	go func() {
		start := time.Now()
		held := awaitRelease(members, ids, releaseTimeout)
		s.post(core.Released{Gen: e.Gen, Held: held, Took: time.Since(start)})
	}()
}

// membersOf returns a function that lists the live processes of the
// workers ids, safe to call off Run's goroutine: the members of their
// cgroups, or of their process groups when they have no cgroup of their
// own. It is nil when none of them runs.
func (s *Supervisor) membersOf(ids []core.WorkerID) func() []int {
	var pgids []int
	var dirs []string
	for _, id := range ids {
		if p := s.procs[id]; p != nil {
			pgids = append(pgids, p.pid)
			if p.cg != nil {
				dirs = append(dirs, p.cg.Dir)
			}
		}
	}
	switch {
	case len(pgids) == 0:
		return nil
	case len(dirs) == len(pgids):
		return func() []int { return cgroupMembers(dirs) }
	default:
		return func() []int { return groupMembers(pgids) }
	}
}

// socketShutDown reports a held socket that a process holding it shut down
// (sockets.Watch): the connections queued on it were reset, and it takes no
// more unless it could be listened on again.
func (s *Supervisor) socketShutDown(sd sockets.Shutdown) {
	if sd.Err != nil {
		s.log.Error("a process that holds the socket shut it down (shutdown(2)); it takes no more connections, and only a new socket repairs it: restart the service, and its .socket unit if it has one",
			"socket", sd.Name, "err", sd.Err)
		return
	}
	s.log.Error("a process that holds the socket shut it down (shutdown(2)), resetting the connections queued on it; it listens again",
		"socket", sd.Name, "backlog", sd.Backlog)
}

// socketCounters lists every held socket with the shutdowns the watcher
// saw of it.
func (s *Supervisor) socketCounters() []control.SocketCounters {
	counts := s.watcher.Counts()
	out := make([]control.SocketCounters, len(s.sockets))
	for i, sock := range s.sockets {
		out[i].Name = sock.Name
		if i < len(counts) {
			out[i].Shutdowns, out[i].Relistened = counts[i].Shutdowns, counts[i].Relistened
		}
	}
	return out
}

// startWatchdog pings systemd at half the WatchdogSec= interval, through
// Run's goroutine, so a wedged supervisor stops the pings and systemd acts.
func (s *Supervisor) startWatchdog() {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		s.log.Warn("watchdog settings ignored", "err", err)
		return
	}
	if interval <= 0 || !s.up.Enabled() {
		return
	}
	s.log.Info("watchdog enabled", "interval", interval)
	go func() {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.post(watchdogTick{})
			case <-s.done:
				return
			}
		}
	}()
}

// checkIntercept: every group with intercept_bind has sockets to give, and
// sockshim could read what they are bound to.
func (s *Supervisor) checkIntercept(cfg *config.Config) error {
	for i, g := range cfg.Workers {
		if !g.InterceptBind {
			continue
		}
		if s.heldErr != nil {
			return fmt.Errorf("worker[%d] (%s): intercept_bind: %w", i, g.Name, s.heldErr)
		}
		if len(s.heldFor(g.Sockets)) == 0 {
			return fmt.Errorf("worker[%d] (%s): intercept_bind = true, but the group has no socket a bind could be given (sockets held: %d)", i, g.Name, len(s.held))
		}
	}
	return nil
}

// heldFor returns the held sockets a group may be given, as sockets.Select
// does for LISTEN_FDS.
func (s *Supervisor) heldFor(wanted []string) []intercept.Held {
	if wanted == nil {
		return s.held
	}
	var out []intercept.Held
	for _, h := range s.held {
		if slices.Contains(wanted, h.Name) {
			out = append(out, h)
		}
	}
	return out
}
