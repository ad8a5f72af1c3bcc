package shim

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/control"
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
	// Executable is the binary started in trampoline mode; default
	// /proc/self/exe, which still names sockshim's own image after a package
	// upgrade replaced the file on disk.
	Executable string
	// Stdout and Stderr receive the workers' output; default sockshim's own,
	// so journald files it under the unit.
	Stdout, Stderr *os.File
	// LoadConfig re-reads the config on reload; default config.Load of
	// Config.Path.
	LoadConfig func() (*config.Config, error)
}

// Supervisor runs the worker groups of one config.
type Supervisor struct {
	log            *slog.Logger
	up             *notify.Upstream
	exe            string
	stdout, stderr *os.File
	baseEnv        []string
	sockets        []handoff.Socket
	socketIDs      map[string]bool // the sockets as /proc/PID/fd names them
	loadConfig     func() (*config.Config, error)
	events         chan event
	done           chan struct{}
	started        time.Time

	// State below is owned by the Run goroutine.
	cfg        *config.Config
	gen        int // newest generation number handed out
	groups     []*group
	retired    []*group // removed from the config by a reload, still draining
	readySent  bool
	stopping   bool
	reload     *reloadRun      // the reload in progress, if any
	pending    []*reloadWaiter // requests that arrived during it
	reloads    int
	lastStatus string
}

// group is the runtime side of one [[worker]] entry.
type group struct {
	cfg      config.Worker // config of the workers in slots
	gen      int           // generation new workers of this group get
	slots    []*slot       // index is the worker id
	draining []*worker     // told to stop, any generation, oldest first
	rollout  *rollout      // non-nil while a reload replaces this group's workers
}

// slot is one worker id of a group: the worker currently filling it and the
// crash-loop accounting that outlives individual processes.
type slot struct {
	cur       *worker // nil while a respawn is pending
	failures  int     // consecutive crashes, reset by a stable run
	restarts  int     // total respawns, for status
	respawnAt time.Time
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
	s := &Supervisor{
		log:        o.Logger,
		up:         o.Upstream,
		exe:        o.Executable,
		stdout:     o.Stdout,
		stderr:     o.Stderr,
		baseEnv:    os.Environ(),
		sockets:    o.Sockets,
		loadConfig: o.LoadConfig,
		events:     make(chan event, 64),
		done:       make(chan struct{}),
		cfg:        o.Config,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if ids, err := socketIDs(o.Sockets); err != nil {
		s.log.Warn("reloads will not wait for old workers to release the sockets", "err", err)
	} else {
		s.socketIDs = ids
	}
	if s.up == nil {
		s.up = notify.NewUpstream(s.log)
	}
	if s.exe == "" {
		s.exe = "/proc/self/exe"
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
	for _, gc := range o.Config.Workers {
		s.groups = append(s.groups, s.newGroup(gc, 1))
	}
	return s, nil
}

func (s *Supervisor) newGroup(gc config.Worker, gen int) *group {
	g := &group{cfg: gc, gen: gen, slots: make([]*slot, gc.Count)}
	for i := range g.slots {
		g.slots[i] = &slot{}
	}
	return g
}

// Stop asks the supervisor to drain every worker and return from Run. A
// forced stop SIGKILLs the workers at once (the second SIGINT of an operator
// who does not want to wait).
func (s *Supervisor) Stop(force bool) { s.post(stopRequested{force: force}) }

// Reload starts a reload, or joins the next one if a reload is running, and
// waits for its end. progress receives a line per step; it runs on the
// caller's goroutine, so a slow client never stalls the supervisor.
func (s *Supervisor) Reload(ctx context.Context, progress func(string)) (string, error) {
	w := &reloadWaiter{lines: make(chan string, 256), result: make(chan reloadResult, 1)}
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
			return r.message, r.err
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

// post delivers an event to the state goroutine, or drops it once Run has
// returned, so timers and reapers that fire late never block forever.
func (s *Supervisor) post(ev event) {
	select {
	case s.events <- ev:
	case <-s.done:
	}
}

func (s *Supervisor) now() time.Time { return time.Now() }

// Run starts generation 1 and handles events until a stop has drained every
// worker. It is the only goroutine that touches supervisor state.
func (s *Supervisor) Run() error {
	defer close(s.done)
	s.started = s.now()
	s.gen = 1
	s.log.Info("starting", "generation", s.gen, "groups", len(s.groups), "sockets", len(s.sockets))
	for _, g := range s.groups {
		for id := range g.slots {
			s.fill(g, id)
		}
	}
	s.startWatchdog()
	s.publishStatus()
	for ev := range s.events {
		s.handle(ev)
		if s.stopping && len(s.liveWorkers()) == 0 {
			break
		}
		s.publishStatus()
	}
	if !s.up.Flush(2 * time.Second) {
		s.log.Warn("the service manager did not take our last notifications within 2s")
	}
	s.log.Info("stopped")
	return nil
}

func (s *Supervisor) handle(ev event) {
	switch ev := ev.(type) {
	case exited:
		s.onExit(ev)
	case notified:
		s.onNotify(ev.w, ev.msg)
	case notifyRejected:
		s.log.Warn("notify datagram rejected", "worker", ev.w, "sender_pid", ev.pid, "err", ev.err)
	case probed:
		if ev.w.state == starting {
			s.markReady(ev.w)
		}
	case readyTimedOut:
		s.onReadyTimeout(ev.w)
	case drainExpired:
		if ev.w.live() {
			s.log.Warn("worker still running at drain_timeout, killing it", "worker", ev.w, "pid", ev.w.pid,
				"generation", ev.w.gen, "drain_timeout", ev.w.cfg.DrainTimeout)
			ev.w.killed = "still running at drain_timeout"
			ev.w.kill()
		}
	case respawnDue:
		if !s.stopping && ev.id < len(ev.g.slots) && ev.g.slots[ev.id].cur == nil && s.hasGroup(ev.g) {
			s.fill(ev.g, ev.id)
		}
	case stopRequested:
		s.beginStop(ev.force)
	case reloadRequested:
		s.onReloadRequest(ev.w)
	case releaseDone:
		s.onReleaseDone(ev)
	case statusRequested:
		ev.reply <- s.snapshot()
	case watchdogTick:
		// Answering at all proves the state goroutine is not wedged.
		s.notifyUp("WATCHDOG=1")
	}
}

// allGroups returns, in a new slice, the config's groups and then the
// removed ones still draining.
func (s *Supervisor) allGroups() []*group { return slices.Concat(s.groups, s.retired) }

func (s *Supervisor) hasGroup(g *group) bool {
	for _, h := range s.groups {
		if h == g {
			return true
		}
	}
	return false
}

// fill starts a worker of the group's current generation in an empty slot.
func (s *Supervisor) fill(g *group, id int) {
	sl := g.slots[id]
	w, err := s.spawn(g, g.cfg, id, g.gen)
	if err != nil {
		sl.failures++
		d := backoff(sl.failures)
		s.log.Error("starting worker failed", "group", g.cfg.Name, "id", id, "err", err, "retry_in", d)
		s.scheduleRespawn(g, id, d)
		return
	}
	sl.cur = w
	s.log.Info("worker started", "worker", w, "pid", w.pid, "generation", w.gen)
	s.watchReadiness(w)
}

func (s *Supervisor) scheduleRespawn(g *group, id int, d time.Duration) {
	g.slots[id].respawnAt = s.now().Add(d)
	time.AfterFunc(d, func() { s.post(respawnDue{g: g, id: id}) })
}

func (s *Supervisor) onNotify(w *worker, m notify.Message) {
	if !w.accepts(m.PID) {
		s.log.Warn("notify datagram from a process outside the worker ignored", "worker", w, "sender_pid", m.PID)
		return
	}
	if st, ok := m.Get("STATUS"); ok {
		w.status = st
	}
	if m.Ready() && w.state == starting {
		// The config says who decides readiness: a server that notifies
		// too early (before its app is loaded) is why "command" exists.
		if w.cfg.Ready == config.ReadyNotify {
			s.markReady(w)
		} else {
			s.log.Debug("READY=1 from the worker ignored", "worker", w, "pid", w.pid, "ready", w.cfg.Ready)
		}
	}
}

func (s *Supervisor) markReady(w *worker) {
	w.stopTimer()
	w.state = ready
	w.readyAt = s.now()
	s.log.Info("worker ready", "worker", w, "pid", w.pid, "generation", w.gen, "after", w.readyAt.Sub(w.started).Round(time.Millisecond))
	if ro := w.group.rollout; ro != nil && ro.owns(w) {
		s.rolloutReady(w.group, w)
		return
	}
	if !s.readySent {
		// The first start is making progress; a slow one (many workers,
		// long ready times) gets more time than TimeoutStartSec=.
		s.extendTimeout(w.cfg.ReadyTimeout + 5*time.Second)
	}
	if !s.readySent && s.allReady() {
		s.readySent = true
		s.log.Info("serving", "generation", s.gen)
		s.notifyUp("READY=1", "STATUS="+s.statusLine())
	}
}

func (s *Supervisor) allReady() bool {
	for _, g := range s.groups {
		for _, sl := range g.slots {
			if sl.cur == nil || sl.cur.state != ready {
				return false
			}
		}
	}
	return true
}

// onReadyTimeout asks a worker that never became ready to stop, gracefully:
// it may already be accepting connections from the shared socket, and those
// deserve answers. drain_timeout still bounds it.
func (s *Supervisor) onReadyTimeout(w *worker) {
	if w.state != starting {
		return
	}
	s.log.Error("worker not ready within ready_timeout, stopping it", "worker", w, "pid", w.pid,
		"generation", w.gen, "ready", w.cfg.Ready, "ready_timeout", w.cfg.ReadyTimeout)
	w.failure = fmt.Sprintf("not ready within ready_timeout (%s)", w.cfg.ReadyTimeout)
	if ro := w.group.rollout; ro != nil && ro.owns(w) {
		s.rolloutFailed(w.group, w)
		return
	}
	s.drain(w)
}

func (s *Supervisor) onExit(ev exited) {
	w := ev.w
	w.stopTimer()
	w.proxy.Close()
	prev := w.state
	w.state = gone
	if w.kill() {
		s.log.Warn("killed processes the worker left behind in its process group", "worker", w, "pgid", w.pid)
	}
	g := w.group
	if i := indexOf(g.draining, w); i >= 0 {
		g.draining = append(g.draining[:i], g.draining[i+1:]...)
	}
	s.forgetRetired()
	// A drained worker is done, unless it was drained because it never
	// became ready: its slot still waits for one that works.
	inSlot := w.id < len(g.slots) && g.slots[w.id].cur == w
	if prev == draining && !inSlot {
		s.log.Info("worker exited", "worker", w, "pid", w.pid, "generation", w.gen, "status", ev.status)
		return
	}
	if w.failure == "" {
		w.failure = "exited with " + ev.status
		if prev == starting {
			w.failure += " before it was ready"
		}
	}
	w.tail = ev.tail
	if ro := g.rollout; ro != nil && ro.owns(w) {
		s.rolloutFailed(g, w)
		return
	}
	if !inSlot || s.stopping {
		s.log.Info("worker exited", "worker", w, "pid", w.pid, "generation", w.gen, "status", ev.status)
		return
	}
	sl := g.slots[w.id]
	sl.cur = nil
	if prev == ready && s.now().Sub(w.readyAt) >= stableAfter {
		sl.failures = 0
	}
	sl.failures++
	sl.restarts++
	d := backoff(sl.failures)
	attrs := []any{"worker", w, "pid", w.pid, "generation", w.gen, "status", ev.status,
		"ran", s.now().Sub(w.started).Round(time.Millisecond), "restart_in", d, "consecutive_failures", sl.failures}
	switch {
	case w.killed != "":
		attrs = append(attrs, "reason", w.killed)
	case prev == draining:
		attrs = append(attrs, "reason", w.failure)
	}
	if prev != ready && len(ev.tail) > 0 {
		attrs = append(attrs, "stderr_tail", ev.tail)
	}
	s.log.Error("worker exited unexpectedly", attrs...)
	s.scheduleRespawn(g, w.id, d)
}

func indexOf(ws []*worker, w *worker) int {
	for i, x := range ws {
		if x == w {
			return i
		}
	}
	return -1
}

func (s *Supervisor) beginStop(force bool) {
	if !s.stopping {
		s.stopping = true
		s.log.Info("stopping: draining all workers")
		s.notifyUp("STOPPING=1", "STATUS=stopping")
		s.abortReload(fmt.Errorf("sockshim is stopping"))
	}
	for _, w := range s.liveWorkers() {
		switch {
		case force:
			w.killed = "forced stop"
			w.kill()
		case w.state != draining:
			s.drain(w)
		}
	}
}

// liveWorkers returns every worker not yet reaped: current, rolling out and
// draining.
func (s *Supervisor) liveWorkers() []*worker {
	var ws []*worker
	for _, g := range s.allGroups() {
		for _, sl := range g.slots {
			if sl.cur != nil && sl.cur.live() {
				ws = append(ws, sl.cur)
			}
		}
		if g.rollout != nil {
			for _, w := range g.rollout.workers {
				if w != nil && w.live() && w.state != draining {
					ws = append(ws, w)
				}
			}
		}
		for _, w := range g.draining {
			if w.live() && indexOf(ws, w) < 0 {
				ws = append(ws, w)
			}
		}
	}
	return ws
}

// notifyUp queues a message for the service manager; it never blocks.
func (s *Supervisor) notifyUp(lines ...string) { s.up.Send(lines...) }

// publishStatus sends STATUS= when the one-line summary changed.
func (s *Supervisor) publishStatus() {
	line := s.statusLine()
	if line == s.lastStatus {
		return
	}
	s.lastStatus = line
	s.notifyUp("STATUS=" + line)
}

// startWatchdog pings systemd at half the WatchdogSec= interval, through the
// event loop, so a wedged state goroutine stops the pings and systemd acts.
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

// extendTimeout asks systemd for more time on the running start or reload
// job, because a worker just made progress.
func (s *Supervisor) extendTimeout(d time.Duration) {
	s.notifyUp("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}
