package core

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/sockshim/sockshim/shim/config"
	"golang.org/x/sys/unix"
)

// A reload replaces the workers of every reloadable group with a new
// generation started from what is on disk now, group by group in parallel,
// each following its strategy:
//
//   - rolling: the first new worker is the canary, started beside the old
//     workers whatever surge says. Until it is ready nothing old is touched;
//     if it fails, the reload is rolled back. After it, up to `surge` new
//     workers start at a time and each one that becomes ready takes over its
//     slot while the old worker of that slot drains. With surge = 0 the old
//     worker of a slot after the canary's is drained first and its
//     replacement started right after (never more than `count` workers once
//     the canary serves). A worker after the canary that fails stops the
//     rollout: slots already switched keep the new generation, the rest keep
//     the old one, and the reload reports failure. Old code cannot be
//     brought back by exec'ing it again (the files on disk are the new ones),
//     so nothing is rolled back.
//   - parallel: the new generation starts, `surge` workers at a time (all of
//     them unless set), each next one as one becomes ready; when all are
//     ready, the whole old one drains. Any failure first rolls everything
//     back.
//
// With promote_after, the canary (rolling) or the whole new generation
// (parallel) first bakes beside the old workers; see promote.go.
//
// Reload requests that arrive while a reload runs wait for it and are then
// all answered by one more reload. A reload is answered once the workers it
// drained have closed the listening sockets (AwaitRelease), so that new
// connections reach the new generation when the caller hears back.

// reloadRun is the reload in progress.
type reloadRun struct {
	waiters  []WaiterID
	loading  bool // LoadConfig asked, ConfigLoaded not yet in
	gen      int
	cfg      *config.Config
	started  time.Time
	failures []string // one per failed group
	notes    []string // what the operator should know, e.g. ignored changes
	removed  []*group // groups gone from the config, retired on success
	added    []*group // groups new in the config, retired on failure
	// result is set once the workers are settled; the callers hear it when
	// the draining workers let go of the sockets.
	result *Answer

	began time.Time // asked for; the reload's duration counts from here
	cause Cause     // of the first failure, for the metrics
}

func (m *Machine) progress(format string, args ...any) {
	if m.reload != nil && len(m.reload.waiters) > 0 {
		m.emit(Progress{Waiters: m.reload.waiters, Line: fmt.Sprintf(format, args...)})
	}
}

func (m *Machine) onReloadRequest(w WaiterID) {
	switch {
	case m.stopping:
		m.emit(Answer{Waiter: w, Err: errors.New("sockshim is stopping")})
	case m.reload != nil:
		m.pending = append(m.pending, w)
		line := "a reload is running; this request will start the next one"
		if !m.reload.loading {
			line = fmt.Sprintf("a reload to generation %d is running; this request will start the next one", m.reload.gen)
		}
		m.emit(Progress{Waiters: []WaiterID{w}, Line: line})
	default:
		m.beginReload([]WaiterID{w})
	}
}

// beginReload reads the config; the reload proper starts when it is in.
func (m *Machine) beginReload(waiters []WaiterID) {
	m.reload = &reloadRun{waiters: waiters, loading: true, began: m.now}
	m.emit(LoadConfig{})
}

func (m *Machine) onConfigLoaded(cfg *config.Config, err error) {
	r := m.reload
	if r == nil || !r.loading {
		return // the reload was aborted by a stop meanwhile
	}
	if err != nil {
		m.log(slog.LevelError, "reload aborted: the config does not load; the running generation keeps serving", "err", err)
		m.reload = nil
		m.reloadEnded(r.began, true, CauseConfig)
		for _, w := range r.waiters {
			m.emit(Answer{Waiter: w, Err: fmt.Errorf("config not loaded, nothing changed: %w", err)})
		}
		m.startPending()
		return
	}
	m.startReload(r, cfg)
}

func (m *Machine) startReload(r *reloadRun, cfg *config.Config) {
	m.gen++
	m.reloads++
	r.loading, r.gen, r.cfg, r.started = false, m.gen, cfg, m.now
	m.generationBegan(r.gen)
	m.log(slog.LevelInfo, "reload started", "generation", r.gen)
	if m.readySent {
		// Before the first READY=1 the service manager still waits for
		// the start; a reload then is part of it.
		m.emit(Notify{Lines: []string{"RELOADING=1", fmt.Sprintf("STATUS=reloading to generation %d", r.gen)}, Monotonic: true})
		m.lastStatus = "" // STATUS= above was not the status line
	}
	m.progress("reloading to generation %d", r.gen)

	if !reflect.DeepEqual(m.cfg.Listen, cfg.Listen) {
		r.notes = append(r.notes, "[[listen]] changed: sockets are kept for sockshim's life; restart the service to apply")
	}
	if m.cfg.Control != cfg.Control {
		r.notes = append(r.notes, "[control] changed: the control socket is kept for sockshim's life; restart the service to apply")
	}
	if m.cfg.Metrics != cfg.Metrics {
		r.notes = append(r.notes, "[metrics] changed: the metrics endpoint is kept for sockshim's life; restart the service to apply")
	}
	for _, gc := range cfg.Workers {
		g := m.findGroup(gc.Name)
		switch {
		case g == nil:
			g = newGroup(gc, r.gen, 0) // its slots come as its workers become ready
			m.groups = append(m.groups, g)
			r.added = append(r.added, g)
			g.rollout = newRollout(gc, r.gen)
		case !g.cfg.Reloadable:
			if !reflect.DeepEqual(g.cfg, gc) {
				r.notes = append(r.notes, fmt.Sprintf("group %s is not reloadable: its config changes apply on restart", gc.Name))
			}
		default:
			g.rollout = newRollout(gc, r.gen)
		}
	}
	for _, g := range m.groups {
		if !hasWorker(cfg, g.cfg.Name) {
			r.removed = append(r.removed, g)
		}
	}
	// Every rollout is set up before any starts: an outcome can only come
	// back as a later event, so none of them ends inside this loop.
	for _, g := range m.groups {
		if g.rollout != nil {
			m.advance(g)
		}
	}
	if m.rolloutsRunning() == 0 {
		m.settle()
	}
}

func newRollout(gc config.Worker, gen int) *rollout {
	return &rollout{cfg: gc, gen: gen, workers: make([]*worker, gc.Count)}
}

func hasWorker(cfg *config.Config, name string) bool {
	for _, gc := range cfg.Workers {
		if gc.Name == name {
			return true
		}
	}
	return false
}

func (m *Machine) findGroup(name string) *group {
	for _, g := range m.groups {
		if g.cfg.Name == name {
			return g
		}
	}
	return nil
}

func (m *Machine) rolloutsRunning() int {
	n := 0
	for _, g := range m.groups {
		if g.rollout != nil {
			n++
		}
	}
	return n
}

// advance starts whatever the group's strategy allows next.
func (m *Machine) advance(g *group) {
	ro := g.rollout
	if ro.baking() {
		return // the workers after the canary wait for its promotion
	}
	inflight := 0
	for _, w := range ro.pending() {
		if w.state == Starting {
			inflight++
		}
	}
	limit := max(ro.cfg.Surge, 1)
	if !ro.parallel() && !ro.canaryOK {
		limit = 1
	}
	for inflight < limit && ro.next < len(ro.workers) {
		id := ro.next
		ro.next++
		if id < len(g.slots) && g.slots[id].cur != nil && g.slots[id].cur.gen == ro.gen {
			continue // respawned into the new generation since its canary served
		}
		// surge = 0, once the canary serves: the old worker makes room first.
		if !ro.parallel() && ro.cfg.Surge == 0 && ro.canaryOK && id < len(g.slots) && g.slots[id].cur != nil {
			m.retireWorker(g.slots[id].cur)
			g.slots[id].cur = nil
		}
		ro.workers[id] = m.start(g, ro.cfg, id, ro.gen, candidate)
		inflight++
	}
}

// rolloutReady moves ready candidates into their slots when the strategy
// says so, and drains the workers they replace.
func (m *Machine) rolloutReady(w *worker) {
	g := w.group
	ro := g.rollout
	m.progress("%s: ready after %s", w, w.readyAt.Sub(w.started).Round(time.Millisecond))
	m.extendTimeout(ro.cfg.ReadyTimeout + 5*time.Second)
	if ro.parallel() {
		for _, p := range ro.workers {
			if p == nil || p.state != Ready {
				m.advance(g) // paced by surge: w's place is free
				return
			}
		}
	}
	if ro.shouldBake() {
		bake := []*worker{w} // rolling: the canary
		if ro.parallel() {
			bake = ro.workers
		}
		m.startBake(g, bake)
		return
	}
	m.serveReady(g, w)
}

// serveReady moves ready candidates into their slots (parallel: all of
// them, rolling: w) and starts what comes next.
func (m *Machine) serveReady(g *group, w *worker) {
	ro := g.rollout
	if !ro.canaryOK {
		ro.canaryOK = true
		if !ro.parallel() {
			// The canary serves: the new generation is now the one a
			// crashed worker of this group is respawned into.
			g.cfg, g.gen = ro.cfg, ro.gen
		}
	}
	if ro.parallel() {
		g.cfg, g.gen = ro.cfg, ro.gen
		for _, p := range ro.workers {
			m.takeSlot(p)
		}
	} else {
		m.takeSlot(w)
	}
	m.advance(g)
	if ro.next == len(ro.workers) && len(ro.pending()) == 0 {
		m.rolloutEnd(g, nil)
	}
}

// takeSlot puts a ready candidate in its slot and drains the slot's old
// worker.
func (m *Machine) takeSlot(w *worker) {
	g := w.group
	w.role = inSlot
	for len(g.slots) <= w.slot {
		g.slots = append(g.slots, &slot{})
	}
	sl := g.slots[w.slot]
	m.cancelTimer(&sl.respawnTimer)
	if sl.cur != nil {
		m.retireWorker(sl.cur)
	}
	sl.cur = w
	sl.failures = 0
}

// rolloutFailed handles a candidate that exited, could not start or timed
// out.
func (m *Machine) rolloutFailed(w *worker) {
	m.retireWorker(w)
	why := fmt.Sprintf("%s%s (generation %d", m.bakeRole(w), w, w.gen)
	if w.pid != 0 {
		why += fmt.Sprintf(", pid %d", w.pid)
	}
	why += ") " + w.failure
	if len(w.tail) > 0 {
		why += "; its last stderr lines: " + strings.Join(w.tail, " | ")
	}
	m.progress("%s", why)
	m.rolloutEnd(w.group, errors.New(why))
}

// rolloutEnd closes a group's rollout; once none runs, the reload settles.
// A failure fails the generation: the other groups' rollouts stop too, so
// that no group moves on to code that failed in another.
func (m *Machine) rolloutEnd(g *group, err error) {
	m.endRollout(g, err)
	if err != nil {
		for _, other := range m.groups {
			if other.rollout != nil {
				m.endRollout(other, fmt.Errorf("stopped because group %s failed", g.cfg.Name))
			}
		}
	}
	if m.rolloutsRunning() == 0 {
		m.settle()
	}
}

// endRollout closes one group's rollout. On failure it stops every candidate
// not yet serving in a slot, and refills the slots left empty.
func (m *Machine) endRollout(g *group, err error) {
	ro := g.rollout
	g.rollout = nil
	m.endBake(ro)
	r := m.reload
	if err != nil {
		m.dropCandidates(ro)
		// Slots surge = 0 emptied, or whose respawn waited for a
		// candidate, get a worker of the generation the group now serves.
		for id, sl := range g.slots {
			if sl.cur == nil && sl.respawnTimer == 0 {
				m.fill(g, id)
			}
		}
		switched := 0
		for _, sl := range g.slots {
			if sl.cur != nil && sl.cur.gen == ro.gen {
				switched++
			}
		}
		if switched == 0 {
			err = fmt.Errorf("group %s rolled back, generation %d keeps serving: %w", g.cfg.Name, m.oldestGen(g), err)
		} else {
			err = fmt.Errorf("group %s stopped mid-rollout (%d of %d workers run generation %d, the others their previous one): %w",
				g.cfg.Name, switched, len(g.slots), ro.gen, err)
		}
		r.failures = append(r.failures, err.Error())
		m.log(slog.LevelError, "rollout failed", "group", g.cfg.Name, "generation", ro.gen, "err", err)
	} else {
		// Old slots beyond the new count drain too.
		for _, sl := range g.slots[len(ro.workers):] {
			m.cancelTimer(&sl.respawnTimer)
			if sl.cur != nil {
				m.retireWorker(sl.cur)
			}
		}
		g.slots = g.slots[:len(ro.workers)]
		g.cfg, g.gen = ro.cfg, ro.gen
		m.progress("%s: %d workers of generation %d serving", g.cfg.Name, len(g.slots), ro.gen)
	}
}

// oldestGen is the oldest generation serving in g's slots.
func (m *Machine) oldestGen(g *group) int {
	gen := g.gen
	for _, sl := range g.slots {
		if sl.cur != nil && sl.cur.gen < gen {
			gen = sl.cur.gen
		}
	}
	return gen
}

// settle decides the reload's outcome once every rollout has ended, then
// waits for the draining workers to stop accepting before answering.
func (m *Machine) settle() {
	r := m.reload
	took := m.now.Sub(r.started).Round(time.Millisecond)
	res := &Answer{}
	r.result = res // from here the status line no longer says "reloading"
	if len(r.failures) == 0 {
		m.cfg = r.cfg
		for _, g := range r.removed {
			m.retire(g)
		}
		res.Message = fmt.Sprintf("generation %d serving (%s) after %s", r.gen, m.statusLine(), took)
		m.log(slog.LevelInfo, "reload done", "generation", r.gen, "took", took)
	} else {
		// A group the failed config added goes again: the config that
		// names it is not the one in force.
		for _, g := range r.added {
			m.retire(g)
		}
		res.Err = errors.New("reload failed: " + strings.Join(r.failures, "; "))
		m.log(slog.LevelError, "reload failed", "generation", r.gen, "took", took, "err", res.Err)
	}
	if len(r.notes) > 0 {
		res.Message += " (note: " + strings.Join(r.notes, "; ") + ")"
		m.log(slog.LevelWarn, "reload notes", "notes", r.notes)
	}
	var draining []WorkerID
	for _, w := range m.workers {
		if w.state == Draining {
			draining = append(draining, w.id)
		}
	}
	if len(draining) == 0 {
		m.complete(r)
		return
	}
	m.emit(AwaitRelease{Gen: r.gen, Workers: draining})
}

func (m *Machine) onReleased(ev Released) {
	r := m.reload
	if r == nil || r.gen != ev.Gen || r.result == nil {
		return // answered by a stop meanwhile
	}
	took := ev.Took.Round(time.Millisecond)
	if len(ev.Held) > 0 {
		m.log(slog.LevelWarn, "draining workers still hold the listening sockets and may accept connections", "pids", ev.Held, "after", took)
		r.result.Message += fmt.Sprintf(" (note: draining pids %v still hold the listening sockets after %s and may accept connections)", ev.Held, took)
	} else {
		m.progress("draining workers stopped accepting after %s", took)
	}
	m.complete(r)
}

// complete answers the reload's callers, tells the service manager it is
// over, and starts the reload that requests made meanwhile wait for.
func (m *Machine) complete(r *reloadRun) {
	m.reload = nil
	failed, cause := r.outcome()
	m.reloadEnded(r.began, failed, cause)
	if r.result.Err == nil {
		if sent := m.sendReloadSignals(r.gen); len(sent) > 0 {
			r.result.Message += " (reload_signal sent: " + strings.Join(sent, "; ") + ")"
		}
	}
	if m.readySent || m.allReady() {
		m.readySent = true
		m.notify("READY=1", "STATUS="+m.statusLine())
		m.lastStatus = m.statusLine()
	}
	for _, w := range r.waiters {
		m.emit(Answer{Waiter: w, Message: r.result.Message, Err: r.result.Err})
	}
	m.startPending()
}

// sendReloadSignals tells the groups that a reload does not replace
// (reloadable = false) that reload gen succeeded: reload_signal to each of
// their ready workers that predate it. A worker still starting is not
// signalled: it was exec'd during the reload and may not handle the signal
// yet. It returns one "group: SIGNAL to N workers" per group signalled.
func (m *Machine) sendReloadSignals(gen int) []string {
	var sent []string
	for _, g := range m.groups {
		sig := g.cfg.ReloadSignal
		if g.cfg.Reloadable || sig == 0 {
			continue
		}
		n := 0
		for _, sl := range g.slots {
			w := sl.cur
			if w == nil || w.state != Ready || w.gen >= gen {
				continue
			}
			w.reloadSignal, w.reloadSignalAt = sig, m.now
			m.emit(Signal{Worker: w.id, Signal: sig})
			n++
		}
		if n == 0 {
			continue
		}
		g.reloadSignals++
		g.lastReloadSignal = m.now
		m.log(slog.LevelInfo, "reload_signal sent", "group", g.cfg.Name, "signal", unix.SignalName(sig), "workers", n, "generation", gen)
		sent = append(sent, fmt.Sprintf("%s: %s to %d worker%s", g.cfg.Name, unix.SignalName(sig), n, plural(n)))
	}
	return sent
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (m *Machine) startPending() {
	if len(m.pending) > 0 && !m.stopping {
		waiters := m.pending
		m.pending = nil
		m.beginReload(waiters)
	}
}

// retire drains a group that left the config; forgetRetired drops it once
// its workers are gone.
func (m *Machine) retire(g *group) {
	for _, sl := range g.slots {
		m.cancelTimer(&sl.respawnTimer)
		if sl.cur != nil {
			m.retireWorker(sl.cur)
		}
	}
	if g.rollout != nil {
		m.dropCandidates(g.rollout)
		m.endBake(g.rollout)
		g.rollout = nil
	}
	g.slots = nil
	for i, h := range m.groups {
		if h == g {
			m.groups = append(m.groups[:i], m.groups[i+1:]...)
			break
		}
	}
	m.retired = append(m.retired, g)
	m.forgetRetired()
}

// abortReload ends the running reload (sockshim is stopping) and answers
// every caller, queued ones included.
func (m *Machine) abortReload(err error) {
	waiters := m.pending
	m.pending = nil
	if r := m.reload; r != nil {
		if r.result != nil {
			// Settled, only waiting for old workers to let go: it did end.
			failed, cause := r.outcome()
			m.reloadEnded(r.began, failed, cause)
			for _, w := range r.waiters {
				m.emit(Answer{Waiter: w, Message: r.result.Message, Err: r.result.Err})
			}
		} else {
			m.reloadEnded(r.began, true, CauseStopped)
			waiters = append(r.waiters, waiters...)
		}
		for _, g := range m.groups {
			if g.rollout != nil {
				m.dropCandidates(g.rollout)
				m.endBake(g.rollout)
				g.rollout = nil
			}
		}
		m.reload = nil
	}
	for _, w := range waiters {
		m.emit(Answer{Waiter: w, Err: err})
	}
}
