package core

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/notify"
	"golang.org/x/sys/unix"
)

// Machine is the supervisor's state and rules. It is not safe for
// concurrent use: one goroutine owns it and calls Step.
type Machine struct {
	cfg     *config.Config
	gen     int // newest generation handed out
	groups  []*group
	retired []*group  // removed from the config by a reload, still draining
	workers []*worker // every worker not yet reaped, in start order

	timers     map[TimerID]timer
	lastTimer  TimerID
	lastWorker WorkerID

	started    time.Time
	readySent  bool // the first READY=1
	stopping   bool
	reload     *reloadRun // the reload in progress
	pending    []WaiterID // callers that asked during it
	reloads    int
	lastStatus string

	counters   counters
	genStarted map[int]time.Time // when each generation that may serve began

	// The step in progress.
	now time.Time
	out []Effect
}

// timer says what a timer the machine set is for.
type timer struct {
	kind   timerKind
	w      *worker
	g      *group
	slotID int
}

type timerKind int

const (
	readyTimeout timerKind = iota
	readyDelay
	drainDeadline
	respawn
	bakeEnd
)

// New returns a machine for cfg; Boot starts it.
func New(cfg *config.Config) *Machine {
	m := &Machine{cfg: cfg, timers: map[TimerID]timer{}}
	for _, gc := range cfg.Workers {
		m.groups = append(m.groups, newGroup(gc, 1, gc.Count))
	}
	return m
}

// Done reports whether a stop has ended: every worker is reaped.
func (m *Machine) Done() bool { return m.stopping && len(m.workers) == 0 }

// Step applies one event at time now and returns what must be done.
func (m *Machine) Step(now time.Time, ev Event) []Effect {
	m.now = now
	switch ev := ev.(type) {
	case Boot:
		m.boot()
	case Spawned:
		if w := m.find(ev.Worker); w != nil {
			m.onSpawned(w, ev.PID)
		}
	case SpawnFailed:
		if w := m.find(ev.Worker); w != nil {
			m.onSpawnFailed(w, ev.Err)
		}
	case Exited:
		if w := m.find(ev.Worker); w != nil {
			m.onExit(w, ev.Status, ev.Tail)
		}
	case Notified:
		if w := m.find(ev.Worker); w != nil {
			m.onNotify(w, ev.Msg)
		}
	case Probed:
		if w := m.find(ev.Worker); w != nil && w.state == Starting && w.cfg.Ready.Probed() {
			m.markReady(w)
		}
	case HealthChecked:
		if w := m.find(ev.Worker); w != nil {
			m.onHealthChecked(w, ev.Err)
		}
	case TimerFired:
		m.onTimer(ev.Timer)
	case ReloadRequested:
		m.onReloadRequest(ev.Waiter)
	case ConfigLoaded:
		m.onConfigLoaded(ev.Config, ev.Err)
	case Released:
		m.onReleased(ev)
	case StopRequested:
		m.stop(ev.Force)
	default:
		panic(fmt.Sprintf("core: unknown event %T", ev))
	}
	m.publishStatus()
	out := m.out
	m.out = nil
	return out
}

func (m *Machine) emit(e ...Effect) { m.out = append(m.out, e...) }

func (m *Machine) log(level slog.Level, msg string, attrs ...any) {
	m.emit(Log{Level: level, Msg: msg, Attrs: attrs})
}

// notify queues lines for the service manager.
func (m *Machine) notify(lines ...string) { m.emit(Notify{Lines: lines}) }

// extendTimeout asks the service manager for more time on the running start
// or reload job, because a worker just made progress.
func (m *Machine) extendTimeout(d time.Duration) {
	m.notify("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// publishStatus sends STATUS= when the one-line summary changed.
func (m *Machine) publishStatus() {
	if line := m.statusLine(); line != m.lastStatus {
		m.lastStatus = line
		m.notify("STATUS=" + line)
	}
}

func (m *Machine) setTimer(d time.Duration, t timer) TimerID {
	m.lastTimer++
	m.timers[m.lastTimer] = t
	m.emit(SetTimer{Timer: m.lastTimer, After: d})
	return m.lastTimer
}

func (m *Machine) cancelTimer(id *TimerID) {
	if *id == 0 {
		return
	}
	delete(m.timers, *id)
	m.emit(CancelTimer{Timer: *id})
	*id = 0
}

func (m *Machine) onTimer(id TimerID) {
	t, ok := m.timers[id]
	if !ok {
		return // cancelled: what it guarded already happened
	}
	delete(m.timers, id)
	switch t.kind {
	case readyTimeout:
		t.w.readyTimer = 0
		m.onReadyTimeout(t.w)
	case readyDelay:
		t.w.delayTimer = 0
		m.markReady(t.w)
	case drainDeadline:
		t.w.drainTimer = 0
		if t.w.killed == "" {
			m.counters.group(t.w.group.cfg.Name).deadlineKills++
		}
		m.log(slog.LevelWarn, "worker still running at drain_timeout, killing it", "worker", t.w, "pid", t.w.pid,
			"generation", t.w.gen, "drain_timeout", t.w.cfg.DrainTimeout)
		m.kill(t.w, "still running at drain_timeout")
	case respawn:
		sl := t.g.slots[t.slotID]
		sl.respawnTimer = 0
		// A rollout's candidate for the slot will take it; should it fail,
		// the rollout's end refills the slot.
		if sl.cur == nil && !m.stopping && !t.g.awaitsCandidate(t.slotID) {
			m.fill(t.g, t.slotID)
		}
	case bakeEnd:
		m.onBakeEnd(t.g)
	}
}

func (m *Machine) boot() {
	m.started = m.now
	m.gen = 1
	m.generationBegan(1)
	m.log(slog.LevelInfo, "starting", "generation", m.gen, "groups", len(m.groups))
	for _, g := range m.groups {
		for id := range g.slots {
			m.fill(g, id)
		}
	}
}

func (m *Machine) find(id WorkerID) *worker {
	for _, w := range m.workers {
		if w.id == id {
			return w
		}
	}
	return nil
}

// start asks for a new worker process.
func (m *Machine) start(g *group, cfg config.Worker, slotID, gen int, r role) *worker {
	m.lastWorker++
	w := &worker{id: m.lastWorker, group: g, cfg: cfg, slot: slotID, gen: gen, state: Starting, role: r}
	m.workers = append(m.workers, w)
	m.emit(Start{Worker: w.id, Config: cfg, Slot: slotID, Gen: gen})
	return w
}

// fill starts a worker of the group's current generation in an empty slot.
func (m *Machine) fill(g *group, id int) {
	sl := g.slots[id]
	m.cancelTimer(&sl.respawnTimer)
	sl.cur = m.start(g, g.cfg, id, g.gen, inSlot)
}

func (m *Machine) onSpawned(w *worker, pid int) {
	w.pid = pid
	w.started = m.now
	m.log(slog.LevelInfo, "worker started", "worker", w, "pid", pid, "generation", w.gen)
	if w.role == candidate {
		m.progress("%s: started (generation %d, pid %d)", w, w.gen, pid)
	}
	if w.state != Starting {
		return // drained before it ran: its signal is on its way
	}
	// ready_timeout bounds every way of becoming ready.
	w.readyTimer = m.setTimer(w.cfg.ReadyTimeout, timer{kind: readyTimeout, w: w})
	switch w.cfg.Ready {
	case config.ReadyDelay:
		w.delayTimer = m.setTimer(w.cfg.ReadyDelay, timer{kind: readyDelay, w: w})
	case config.ReadyCommand, config.ReadyAccepting:
		w.probing = true
		m.emit(StartProbe{Worker: w.id, PID: pid, Slot: w.slot, Gen: w.gen, Config: w.cfg})
	}
}

// stopReadiness cancels whatever was deciding that w serves.
func (m *Machine) stopReadiness(w *worker) {
	m.cancelTimer(&w.readyTimer)
	m.cancelTimer(&w.delayTimer)
	if w.probing {
		w.probing = false
		m.emit(StopProbe{Worker: w.id, TimedOut: w.timedOut})
	}
}

// reaped forgets a worker whose process is gone.
func (m *Machine) reaped(w *worker) {
	m.stopReadiness(w)
	m.cancelTimer(&w.drainTimer)
	w.state = Gone
	m.workers = slices.DeleteFunc(m.workers, func(x *worker) bool { return x == w })
	m.forgetRetired()
}

func (m *Machine) onSpawnFailed(w *worker, err error) {
	prev := w.state
	m.reaped(w)
	w.failure = fmt.Sprintf("could not be started: %v", err)
	switch w.role {
	case candidate:
		m.failCause(CauseSpawn)
		m.rolloutFailed(w)
	case inSlot:
		m.slotLost(w, prev, "")
	}
}

func (m *Machine) onExit(w *worker, status string, tail []string) {
	prev := w.state
	m.reaped(w)
	w.tail = tail
	if w.role == retiring {
		m.log(slog.LevelInfo, "worker exited", "worker", w, "pid", w.pid, "generation", w.gen, "status", status)
		return
	}
	if w.failure == "" {
		w.failure = "exited with " + status
		if prev == Starting {
			w.failure += " before it was ready"
		}
		if m.inBake(w) {
			w.failure = m.bakeExit(w, status)
		}
	}
	switch w.role {
	case candidate:
		m.failCause(CauseExit)
		m.rolloutFailed(w)
	case inSlot:
		m.slotLost(w, prev, status)
	}
}

// slotLost handles the end of a slot's worker: outside a stop, the slot gets
// a new one after the crash loop's backoff.
func (m *Machine) slotLost(w *worker, prev State, status string) {
	sl := w.group.slots[w.slot]
	sl.cur = nil
	if m.stopping {
		m.log(slog.LevelInfo, "worker exited", "worker", w, "pid", w.pid, "generation", w.gen, "status", status)
		return
	}
	if prev == Ready && m.now.Sub(w.readyAt) >= stableAfter {
		sl.failures = 0
	}
	sl.failures++
	sl.restarts++
	m.counters.group(w.group.cfg.Name).respawns++
	d := backoff(sl.failures)
	attrs := []any{"worker", w, "generation", w.gen}
	if status != "" {
		attrs = append(attrs, "pid", w.pid)
		attrs = append(attrs, "status", status, "ran", m.now.Sub(w.started).Round(time.Millisecond))
	}
	attrs = append(attrs, "restart_in", d, "consecutive_failures", sl.failures)
	// A worker's exit soon after a reload_signal may be its doing.
	var sinceSignal string
	if w.reloadSignal != 0 && status != "" {
		sinceSignal = fmt.Sprintf("%s sent %s before", unix.SignalName(w.reloadSignal), m.now.Sub(w.reloadSignalAt).Round(time.Millisecond))
	}
	switch {
	case w.killed != "":
		attrs = append(attrs, "reason", w.killed)
	case sinceSignal != "" && status == "signal: "+w.reloadSignal.String():
		attrs = append(attrs, "reason", "killed by its reload_signal "+sinceSignal+": the worker does not handle it")
	case prev != Ready:
		attrs = append(attrs, "reason", w.failure)
	case sinceSignal != "":
		attrs = append(attrs, "after_reload_signal", sinceSignal)
	}
	if prev != Ready && len(w.tail) > 0 {
		attrs = append(attrs, "stderr_tail", w.tail)
	}
	if status == "" {
		m.log(slog.LevelError, "starting worker failed", attrs...)
	} else {
		m.log(slog.LevelError, "worker exited unexpectedly", attrs...)
	}
	sl.respawnAt = m.now.Add(d)
	sl.respawnTimer = m.setTimer(d, timer{kind: respawn, g: w.group, slotID: w.slot})
}

func (m *Machine) onNotify(w *worker, msg notify.Message) {
	if st, ok := msg.Get("STATUS"); ok {
		w.status = printable(st, maxWorkerStatus)
	}
	if !msg.Ready() || w.state != Starting {
		return
	}
	// The config says who decides readiness: a server that notifies too
	// early (before its app is loaded) is why "command" exists.
	if w.cfg.Ready == config.ReadyNotify {
		m.markReady(w)
	} else {
		m.log(slog.LevelDebug, "READY=1 from the worker ignored", "worker", w, "pid", w.pid, "ready", w.cfg.Ready)
	}
}

func (m *Machine) markReady(w *worker) {
	if w.state != Starting {
		return
	}
	m.stopReadiness(w)
	w.state = Ready
	w.readyAt = m.now
	m.log(slog.LevelInfo, "worker ready", "worker", w, "pid", w.pid, "generation", w.gen,
		"after", w.readyAt.Sub(w.started).Round(time.Millisecond))
	if w.role == candidate {
		m.rolloutReady(w)
		return
	}
	if m.readySent {
		return
	}
	// The first start is making progress; a slow one (many workers, long
	// ready times) gets more time than TimeoutStartSec=.
	m.extendTimeout(w.cfg.ReadyTimeout + 5*time.Second)
	if m.allReady() {
		m.readySent = true
		m.log(slog.LevelInfo, "serving", "generation", m.gen)
		m.notify("READY=1", "STATUS="+m.statusLine())
		m.lastStatus = m.statusLine()
	}
}

// allReady reports whether every slot of every group has a ready worker.
func (m *Machine) allReady() bool {
	for _, g := range m.groups {
		for _, sl := range g.slots {
			if sl.cur == nil || sl.cur.state != Ready {
				return false
			}
		}
	}
	return true
}

// onReadyTimeout asks a worker that never became ready to stop, gracefully:
// it may already accept connections from the shared socket, and those
// deserve answers. drain_timeout still bounds it.
func (m *Machine) onReadyTimeout(w *worker) {
	if w.state != Starting {
		return
	}
	m.log(slog.LevelError, "worker not ready within ready_timeout, stopping it", "worker", w, "pid", w.pid,
		"generation", w.gen, "ready", w.cfg.Ready, "ready_timeout", w.cfg.ReadyTimeout)
	w.failure = fmt.Sprintf("not ready within ready_timeout (%s)", w.cfg.ReadyTimeout)
	w.timedOut = true
	if w.role == candidate {
		m.failCause(CauseReadyTimeout)
		m.rolloutFailed(w)
		return
	}
	m.drain(w) // it keeps its slot until it exits; then the slot is refilled
}
