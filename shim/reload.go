package shim

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/sockets"
)

// A reload replaces the workers of every reloadable group with a new
// generation started from what is on disk now, group by group in parallel,
// each following its strategy:
//
//   - rolling: the first new worker is the canary. Until it is ready nothing
//     old is touched; if it fails, the reload is rolled back. After it, up to
//     `surge` new workers start at a time and each new worker that becomes
//     ready takes over its slot while the old worker of that slot drains.
//     With surge = 0 the old worker of a slot is drained first and its
//     replacement started right after (never more than `count` workers).
//     A worker after the canary that fails stops the rollout: slots already
//     switched keep the new generation, the rest keep the old one, and the
//     reload reports failure. Old code cannot be brought back by exec'ing it
//     again (the files on disk are the new ones), so nothing is rolled back.
//   - parallel: the whole new generation starts at once; when all are ready,
//     the whole old one drains. Any failure first rolls everything back.
//
// Reload requests that arrive while a reload runs wait for it and are then
// all answered by one more reload.

// reloadWaiter is one caller waiting for a reload's outcome.
type reloadWaiter struct {
	lines  chan string // progress; dropped when the caller is slow
	result chan reloadResult
}

type reloadResult struct {
	message string
	err     error
}

// reloadRun is the reload in progress.
type reloadRun struct {
	gen      int
	cfg      *config.Config
	started  time.Time
	waiters  []*reloadWaiter
	running  int      // groups whose rollout has not ended
	failures []string // one per failed group
	notes    []string // things the operator should know, e.g. ignored changes
	removed  []*group // groups gone from the config, retired on success
	added    []*group // groups new in the config, dropped on failure
	// result is set once the workers are settled; the reload is answered
	// when the draining ones have let go of the sockets (release.go).
	result *reloadResult
}

// rollout replaces one group's workers.
type rollout struct {
	cfg      config.Worker
	gen      int
	workers  []*worker // by id; nil until started
	next     int       // next id to start
	canaryOK bool
	emptied  []int // slots whose old worker surge = 0 drained before its replacement was ready
}

// owns reports whether w is a new worker of this rollout not yet moved into
// its slot.
func (ro *rollout) owns(w *worker) bool {
	return w.rollingOut && w.id < len(ro.workers) && ro.workers[w.id] == w
}

func (ro *rollout) pending() []*worker {
	var ws []*worker
	for _, w := range ro.workers {
		if w != nil && w.rollingOut {
			ws = append(ws, w)
		}
	}
	return ws
}

func (s *Supervisor) onReloadRequest(w *reloadWaiter) {
	switch {
	case s.stopping:
		w.result <- reloadResult{err: errors.New("sockshim is stopping")}
	case s.reload != nil:
		s.pending = append(s.pending, w)
		say(w, fmt.Sprintf("a reload to generation %d is running; this request will start the next one", s.reload.gen))
	default:
		s.startReload([]*reloadWaiter{w})
	}
}

func say(w *reloadWaiter, line string) {
	select {
	case w.lines <- line:
	default:
	}
}

func (r *reloadRun) progress(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	for _, w := range r.waiters {
		say(w, line)
	}
}

func (s *Supervisor) startReload(waiters []*reloadWaiter) {
	cfg, err := s.loadConfig()
	if err == nil {
		err = cfg.CheckSocketNames(sockets.Names(s.sockets))
	}
	if err != nil {
		s.log.Error("reload aborted: the config does not load; the running generation keeps serving", "err", err)
		for _, w := range waiters {
			w.result <- reloadResult{err: fmt.Errorf("config not loaded, nothing changed: %w", err)}
		}
		return
	}
	s.gen++
	s.reloads++
	r := &reloadRun{gen: s.gen, cfg: cfg, started: s.now(), waiters: waiters}
	s.reload = r
	s.log.Info("reload started", "generation", r.gen)
	s.notifyUp("RELOADING=1", strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"), fmt.Sprintf("STATUS=reloading to generation %d", r.gen))
	r.progress("reloading to generation %d", r.gen)

	if !reflect.DeepEqual(s.cfg.Listen, cfg.Listen) {
		r.notes = append(r.notes, "[[listen]] changed: sockets are kept for sockshim's life; restart the service to apply")
	}
	for _, gc := range cfg.Workers {
		g := s.findGroup(gc.Name)
		switch {
		case g == nil:
			g = s.newGroup(gc, r.gen)
			g.slots = nil // the rollout adds slots as its workers become ready
			s.groups = append(s.groups, g)
			r.added = append(r.added, g)
			s.startRollout(r, g, gc)
		case !g.cfg.Reloadable:
			if !reflect.DeepEqual(g.cfg, gc) {
				r.notes = append(r.notes, fmt.Sprintf("group %s is not reloadable: its config changes apply on restart", gc.Name))
			}
		default:
			s.startRollout(r, g, gc)
		}
	}
	for _, g := range s.groups {
		if !hasGroup(cfg, g.cfg.Name) {
			r.removed = append(r.removed, g)
		}
	}
	if r.running == 0 {
		s.finishReload()
	}
}

func hasGroup(cfg *config.Config, name string) bool {
	for _, gc := range cfg.Workers {
		if gc.Name == name {
			return true
		}
	}
	return false
}

func (s *Supervisor) findGroup(name string) *group {
	for _, g := range s.groups {
		if g.cfg.Name == name {
			return g
		}
	}
	return nil
}

func (s *Supervisor) startRollout(r *reloadRun, g *group, gc config.Worker) {
	g.rollout = &rollout{cfg: gc, gen: r.gen, workers: make([]*worker, gc.Count)}
	r.running++
	s.advance(g)
}

// advance starts whatever the group's strategy allows next.
func (s *Supervisor) advance(g *group) {
	ro := g.rollout
	inflight := 0
	for _, w := range ro.pending() {
		if w.state == starting {
			inflight++
		}
	}
	limit := len(ro.workers) // parallel: everything at once
	if ro.cfg.Strategy != config.StrategyParallel {
		limit = max(ro.cfg.Surge, 1)
		if !ro.canaryOK {
			limit = 1
		}
	}
	for inflight < limit && ro.next < len(ro.workers) {
		id := ro.next
		ro.next++
		if ro.cfg.Strategy != config.StrategyParallel && ro.cfg.Surge == 0 && id < len(g.slots) && g.slots[id].cur != nil {
			s.drain(g.slots[id].cur) // surge = 0: the old worker makes room first
			g.slots[id].cur = nil
			ro.emptied = append(ro.emptied, id)
		}
		w, err := s.spawn(g, ro.cfg, id, ro.gen)
		if err != nil {
			s.rolloutEnd(g, fmt.Errorf("starting %s[%d]: %w", ro.cfg.Name, id, err))
			return
		}
		w.rollingOut = true
		ro.workers[id] = w
		inflight++
		s.log.Info("worker started", "worker", w, "pid", w.pid, "generation", w.gen)
		s.reload.progress("%s: started (generation %d, pid %d)", w, w.gen, w.pid)
		s.watchReadiness(w)
	}
}

// rolloutReady moves ready new workers into their slots when the strategy
// says so, and drains the workers they replace.
func (s *Supervisor) rolloutReady(g *group, w *worker) {
	ro := g.rollout
	s.reload.progress("%s: ready after %s", w, w.readyAt.Sub(w.started).Round(time.Millisecond))
	s.extendTimeout(ro.cfg.ReadyTimeout + 5*time.Second)
	if !ro.canaryOK {
		ro.canaryOK = true
		if ro.cfg.Strategy != config.StrategyParallel {
			// The canary serves: the new generation is now the one a
			// crashed worker of this group is respawned into.
			g.cfg, g.gen = ro.cfg, ro.gen
		}
	}
	if ro.cfg.Strategy == config.StrategyParallel {
		for _, p := range ro.workers {
			if p == nil || p.state != ready {
				return
			}
		}
		g.cfg, g.gen = ro.cfg, ro.gen
		for _, p := range ro.workers {
			s.takeSlot(g, p)
		}
	} else {
		s.takeSlot(g, w)
	}
	if ro.next == len(ro.workers) && len(ro.pending()) == 0 {
		s.rolloutEnd(g, nil)
		return
	}
	s.advance(g)
}

// takeSlot puts a ready new worker in its slot and drains the slot's old one.
func (s *Supervisor) takeSlot(g *group, w *worker) {
	w.rollingOut = false
	for len(g.slots) <= w.id {
		g.slots = append(g.slots, &slot{})
	}
	sl := g.slots[w.id]
	if old := sl.cur; old != nil {
		s.drain(old)
	}
	sl.cur = w
	sl.failures = 0
}

// rolloutFailed handles a new worker that exited or timed out.
func (s *Supervisor) rolloutFailed(g *group, w *worker) {
	w.rollingOut = false
	if w.live() {
		s.drain(w)
	}
	why := fmt.Sprintf("%s (generation %d, pid %d) %s", w, w.gen, w.pid, w.failure)
	if len(w.tail) > 0 {
		why += "; its last stderr lines: " + strings.Join(w.tail, " | ")
	}
	s.reload.progress("%s", why)
	s.rolloutEnd(g, errors.New(why))
}

// rolloutEnd closes a group's rollout. On failure it stops every new worker
// not yet serving in a slot; slots left empty by surge = 0 are refilled.
func (s *Supervisor) rolloutEnd(g *group, err error) {
	ro := g.rollout
	g.rollout = nil
	r := s.reload
	if err != nil {
		for _, p := range ro.pending() {
			p.rollingOut = false
			s.drain(p)
		}
		for _, id := range ro.emptied {
			if g.slots[id].cur == nil {
				s.fill(g, id)
			}
		}
		switched := 0
		for _, sl := range g.slots {
			if sl.cur != nil && sl.cur.gen == ro.gen {
				switched++
			}
		}
		if switched == 0 {
			err = fmt.Errorf("group %s rolled back, generation %d keeps serving: %w", g.cfg.Name, s.oldestGen(g), err)
		} else {
			err = fmt.Errorf("group %s stopped mid-rollout (%d of %d workers run generation %d, the others their previous one): %w",
				g.cfg.Name, switched, len(g.slots), ro.gen, err)
		}
		r.failures = append(r.failures, err.Error())
		s.log.Error("rollout failed", "group", g.cfg.Name, "generation", ro.gen, "err", err)
	} else {
		// Old slots beyond the new count drain too.
		for _, sl := range g.slots[len(ro.workers):] {
			if sl.cur != nil {
				s.drain(sl.cur)
			}
		}
		g.slots = g.slots[:len(ro.workers)]
		g.cfg, g.gen = ro.cfg, ro.gen
		r.progress("%s: %d workers of generation %d serving", g.cfg.Name, len(g.slots), ro.gen)
	}
	r.running--
	if r.running == 0 {
		s.finishReload()
	}
}

func (s *Supervisor) oldestGen(g *group) int {
	gen := g.gen
	for _, sl := range g.slots {
		if sl.cur != nil && sl.cur.gen < gen {
			gen = sl.cur.gen
		}
	}
	return gen
}

// finishReload settles the outcome once every group's rollout has ended,
// then waits, off the state goroutine, for the draining workers to stop
// accepting before it answers (see release.go).
func (s *Supervisor) finishReload() {
	r := s.reload
	took := s.now().Sub(r.started).Round(time.Millisecond)
	res := &reloadResult{}
	if len(r.failures) == 0 {
		s.cfg = r.cfg
		for _, g := range r.removed {
			s.retire(g)
		}
		res.message = fmt.Sprintf("generation %d serving (%s) after %s", r.gen, s.statusLine(), took)
		s.log.Info("reload done", "generation", r.gen, "took", took)
	} else {
		for _, g := range r.added {
			if len(g.slots) == 0 {
				s.retire(g)
			}
		}
		res.err = errors.New("reload failed: " + strings.Join(r.failures, "; "))
		s.log.Error("reload failed", "generation", r.gen, "took", took, "err", res.err)
	}
	if len(r.notes) > 0 {
		res.message += " (note: " + strings.Join(r.notes, "; ") + ")"
		s.log.Warn("reload notes", "notes", r.notes)
	}
	r.result = res

	pgids := s.drainingPIDs()
	if len(pgids) == 0 || s.socketIDs == nil {
		s.completeReload(r)
		return
	}
	ids := s.socketIDs
	go func() {
		start := time.Now()
		held := awaitRelease(pgids, ids, releaseTimeout)
		s.post(releaseDone{r: r, held: held, took: time.Since(start)})
	}()
}

func (s *Supervisor) onReleaseDone(ev releaseDone) {
	r := ev.r
	if s.reload != r {
		return // answered by a stop meanwhile
	}
	took := ev.took.Round(time.Millisecond)
	if len(ev.held) > 0 {
		s.log.Warn("draining workers still hold the listening sockets and may accept connections", "pids", ev.held, "after", took)
		r.result.message += fmt.Sprintf(" (note: draining pids %v still hold the listening sockets after %s and may accept connections)", ev.held, took)
	} else {
		r.progress("draining workers stopped accepting after %s", took)
	}
	s.completeReload(r)
}

// completeReload answers the reload's callers, tells systemd it is over,
// and starts the reload that requests made meanwhile are waiting for.
func (s *Supervisor) completeReload(r *reloadRun) {
	s.reload = nil
	s.notifyUp("READY=1", "STATUS="+s.statusLine())
	for _, w := range r.waiters {
		w.result <- *r.result
	}
	if pending := s.pending; len(pending) > 0 && !s.stopping {
		s.pending = nil
		s.startReload(pending)
	}
}

func (s *Supervisor) drainingPIDs() []int {
	var pids []int
	for _, g := range s.allGroups() {
		for _, w := range g.draining {
			if w.live() {
				pids = append(pids, w.pid)
			}
		}
	}
	return pids
}

// retire drains a group that left the config and stops tracking it once its
// workers are gone.
func (s *Supervisor) retire(g *group) {
	for _, sl := range g.slots {
		if sl.cur != nil {
			s.drain(sl.cur)
			sl.cur = nil
		}
	}
	g.slots = nil
	for i, h := range s.groups {
		if h == g {
			s.groups = append(s.groups[:i], s.groups[i+1:]...)
			break
		}
	}
	s.retired = append(s.retired, g)
	s.forgetRetired()
}

// abortReload ends a running reload (sockshim is stopping) and answers every
// waiter, queued ones included.
func (s *Supervisor) abortReload(err error) {
	waiters := s.pending
	s.pending = nil
	if r := s.reload; r != nil {
		if r.result != nil {
			// Settled, only waiting for old workers to let go: it did end.
			for _, w := range r.waiters {
				w.result <- *r.result
			}
		} else {
			waiters = append(waiters, r.waiters...)
		}
		for _, g := range s.groups {
			if g.rollout != nil {
				for _, p := range g.rollout.pending() {
					p.rollingOut = false
					s.drain(p)
				}
				g.rollout = nil
			}
		}
		s.reload = nil
	}
	for _, w := range waiters {
		w.result <- reloadResult{err: err}
	}
}
