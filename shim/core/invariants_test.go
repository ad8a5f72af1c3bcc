package core

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/control"
)

// checker steps a machine and checks, after every step, the promises the
// supervisor makes. It sees only events, effects and the machine's state.
type checker struct {
	m       *Machine
	effects []Effect // of the last step

	started   map[WorkerID]bool // Start seen, not yet reaped
	reaped    map[WorkerID]bool
	stopped   map[WorkerID]bool // Signal or Kill seen
	candGen   map[WorkerID]int  // workers started as a reload's candidates
	wasReady  map[WorkerID]bool
	failedGen map[int]bool // reloads one of whose candidates failed
	answered  map[WaiterID]int
	asked     []WaiterID
	readyOnce bool
	stopAsked bool

	// promote_after: when each worker became ready, health probes passed.
	readySince   map[WorkerID]time.Time
	healthOK     map[WorkerID]int
	bakingBefore []WorkerID // of the step in progress

	// What the counters must say, as seen from events and effects.
	ok, failed int
	byCause    map[Cause]int
	firstCause map[int]Cause // by reload generation: its first candidate failure
	groups     map[string]*groupCounters
}

func newChecker(m *Machine) *checker {
	return &checker{m: m, started: map[WorkerID]bool{}, reaped: map[WorkerID]bool{}, stopped: map[WorkerID]bool{},
		candGen: map[WorkerID]int{}, wasReady: map[WorkerID]bool{}, failedGen: map[int]bool{}, answered: map[WaiterID]int{},
		byCause: map[Cause]int{}, firstCause: map[int]Cause{}, groups: map[string]*groupCounters{},
		readySince: map[WorkerID]time.Time{}, healthOK: map[WorkerID]int{}}
}

// step applies ev and returns the first invariant it breaks, or "".
func (c *checker) step(now time.Time, ev Event) string {
	m := c.m
	// Serving workers before the step: ready and in their slot.
	serving := map[WorkerID]bool{}
	wasCandidate := map[WorkerID]bool{}
	baked := map[WorkerID]bool{} // baking, or promotion of its canary done
	c.bakingBefore = c.bakingBefore[:0]
	for _, w := range m.workers {
		serving[w.id] = w.state == Ready && w.role == inSlot
		wasCandidate[w.id] = w.role == candidate
		ro := w.group.rollout
		baked[w.id] = m.inBake(w) || ro != nil && ro.bake != nil && ro.bake.done && ro.gen == w.gen
		if m.inBake(w) {
			c.bakingBefore = append(c.bakingBefore, w.id)
		}
	}
	reloadBefore := m.reload
	var reloadGen int
	if reloadBefore != nil && !reloadBefore.loading {
		reloadGen = reloadBefore.gen
	}
	switch ev := ev.(type) {
	case ReloadRequested:
		c.asked = append(c.asked, ev.Waiter)
	case StopRequested:
		c.stopAsked = true
	case Exited:
		if g, ok := c.candGen[ev.Worker]; ok && !c.wasReady[ev.Worker] && !c.stopAsked {
			c.failedGen[g] = true
		}
		// A baking worker that exits fails its reload.
		if w := m.find(ev.Worker); w != nil && m.inBake(w) && !m.stopping {
			c.failedGen[w.gen] = true
		}
	case HealthChecked:
		if w := m.find(ev.Worker); w != nil && w.probing && m.inBake(w) && !m.stopping {
			if ev.Err != nil {
				c.failedGen[w.gen] = true
			} else {
				c.healthOK[w.id]++
			}
		}
	case SpawnFailed:
		if g, ok := c.candGen[ev.Worker]; ok && !c.stopAsked {
			c.failedGen[g] = true
		}
	}
	cause := c.causeOf(ev, reloadGen)
	c.effects = m.Step(now, ev)

	switch ev := ev.(type) {
	case Exited:
		if c.started[ev.Worker] {
			delete(c.started, ev.Worker)
			c.reaped[ev.Worker] = true
		}
	case SpawnFailed:
		delete(c.started, ev.Worker)
		c.reaped[ev.Worker] = true
	}
	for _, w := range m.workers {
		if w.state == Ready {
			c.wasReady[w.id] = true
			if _, ok := c.readySince[w.id]; !ok {
				c.readySince[w.id] = now
			}
		}
	}
	if msg := c.checkPromotion(now, wasCandidate, baked); msg != "" {
		return msg
	}
	// A reload that ended in this step with success, not by a stop.
	succeeded := reloadBefore != nil && m.reload != reloadBefore && !m.stopping &&
		reloadBefore.result != nil && reloadBefore.result.Err == nil
	reloadSignalled := map[WorkerID]bool{}
	for _, e := range c.effects {
		switch e := e.(type) {
		case Start:
			c.started[e.Worker] = true
			if w := m.find(e.Worker); w != nil && w.role == candidate {
				c.candGen[e.Worker] = e.Gen
			}
		case Signal, Kill:
			id := workerOf(e)
			if !c.started[id] {
				return fmt.Sprintf("signal to a worker not running: %s", e)
			}
			// drain marks a worker Draining before it signals it: any
			// other Signal is a reload_signal.
			if s, ok := e.(Signal); ok {
				if w := c.find(id); w != nil && w.state != Draining {
					if msg := c.checkReloadSignal(w, s, serving[id], succeeded, reloadBefore, reloadSignalled); msg != "" {
						return msg
					}
					continue
				}
			}
			c.stopped[id] = true
			if msg := c.checkStopOfServing(id, serving[id], e); msg != "" {
				return msg
			}
		case Answer:
			c.answered[e.Waiter]++
			if c.answered[e.Waiter] > 1 {
				return fmt.Sprintf("answered twice: waiter %d", e.Waiter)
			}
			if e.Err == nil && c.failedGen[reloadGen] {
				return fmt.Sprintf("reload answered as success though a candidate of generation %d failed: %s", reloadGen, e.Message)
			}
		case Notify:
			if slices.Contains(e.Lines, "READY=1") {
				if msg := c.checkReady(reloadBefore); msg != "" {
					return msg
				}
			}
		}
	}
	if succeeded {
		// Every worker that served before the reload in a group it signals
		// got its reload_signal.
		for _, w := range m.workers {
			g := w.group
			if serving[w.id] && w.role == inSlot && w.state == Ready && !g.cfg.Reloadable && g.cfg.ReloadSignal != 0 &&
				w.gen < reloadBefore.gen && !reloadSignalled[w.id] {
				return fmt.Sprintf("reload to gen %d succeeded but w%d (%s, gen %d) got no reload_signal", reloadBefore.gen, w.id, w, w.gen)
			}
		}
	}
	if msg := c.checkTimerOnlyWhenReady(ev); msg != "" {
		return msg
	}
	if msg := c.checkCounters(ev, reloadBefore, cause); msg != "" {
		return msg
	}
	return c.checkState()
}

// causeOf notes, before ev is stepped, the first failure of the running
// reload's candidates that ev brings, and returns the cause a reload that
// ends in this step must be counted under if ev ends it by itself.
func (c *checker) causeOf(ev Event, reloadGen int) Cause {
	m := c.m
	r := m.reload
	candidate := func(id WorkerID) bool {
		w := m.find(id)
		return w != nil && w.role == candidate && r != nil && !r.loading && r.result == nil && !m.stopping
	}
	note := func(cause Cause) {
		if _, ok := c.firstCause[reloadGen]; !ok {
			c.firstCause[reloadGen] = cause
		}
	}
	switch ev := ev.(type) {
	case ConfigLoaded:
		if r != nil && r.loading && ev.Err != nil {
			return CauseConfig
		}
	case StopRequested:
		if r != nil && r.result == nil && !m.stopping {
			return CauseStopped
		}
	case SpawnFailed:
		if candidate(ev.Worker) {
			note(CauseSpawn)
		}
	case Exited:
		if candidate(ev.Worker) {
			note(CauseExit)
		}
	case HealthChecked:
		if w := m.find(ev.Worker); ev.Err != nil && candidate(ev.Worker) && w.probing && m.inBake(w) {
			note(CauseHealth)
		}
	case TimerFired:
		if t, ok := m.timers[ev.Timer]; ok && t.kind == readyTimeout && t.w.state == Starting && candidate(t.w.id) {
			note(CauseReadyTimeout)
		}
	}
	return ""
}

// checkCounters: the counters agree with what happened. Every reload run
// that ends is counted once, as its answer says, under the cause that
// failed it first; respawns, drains and kills at the deadline are counted
// per group as their effects go out.
func (c *checker) checkCounters(ev Event, reloadBefore *reloadRun, cause Cause) string {
	m := c.m
	group := func(w *worker) *groupCounters {
		gc := c.groups[w.group.cfg.Name]
		if gc == nil {
			gc = &groupCounters{}
			c.groups[w.group.cfg.Name] = gc
		}
		return gc
	}
	for _, e := range c.effects {
		switch e := e.(type) {
		case Signal:
			if w := c.find(e.Worker); w != nil && w.state == Draining {
				group(w).drains++
			}
		case Kill:
			if w := c.find(e.Worker); w != nil && e.Reason == "still running at drain_timeout" {
				group(w).deadlineKills++
			}
		case Log:
			if e.Msg == "worker exited unexpectedly" || e.Msg == "starting worker failed" {
				group(e.Attrs[1].(*worker)).respawns++
			}
		}
	}
	if reloadBefore != nil && m.reload != reloadBefore {
		// The run ended in this step; its first caller's answer says how.
		var answer *Answer
		for _, e := range c.effects {
			if a, ok := e.(Answer); ok && a.Waiter == reloadBefore.waiters[0] {
				answer = &a
			}
		}
		if answer == nil {
			return fmt.Sprintf("reload run of waiter %d ended without answering it", reloadBefore.waiters[0])
		}
		switch {
		case answer.Err == nil:
			c.ok++
		default:
			c.failed++
			if cause == "" {
				cause = c.firstCause[reloadBefore.gen]
			}
			if cause == "" {
				return fmt.Sprintf("reload to gen %d failed with no cause seen: %v", reloadBefore.gen, answer.Err)
			}
			c.byCause[cause]++
		}
	}
	got := m.countersStatus()
	if got.ReloadsSucceeded != c.ok || got.ReloadsFailed != c.failed {
		return fmt.Sprintf("counters: %d succeeded, %d failed reloads; answers say %d, %d", got.ReloadsSucceeded, got.ReloadsFailed, c.ok, c.failed)
	}
	if got.ReloadDuration.Count != c.ok+c.failed || got.ReloadDuration.Buckets[len(got.ReloadDuration.Buckets)-1].Count > got.ReloadDuration.Count {
		return fmt.Sprintf("counters: reload duration histogram %+v for %d reloads", got.ReloadDuration, c.ok+c.failed)
	}
	sum := 0
	for _, cause := range Causes {
		n := got.FailedByCause[string(cause)]
		sum += n
		if n != c.byCause[cause] {
			return fmt.Sprintf("counters: %d reloads failed by %s, seen %d (%v)", n, cause, c.byCause[cause], got.FailedByCause)
		}
	}
	if sum != got.ReloadsFailed || len(got.FailedByCause) != len(Causes) {
		return fmt.Sprintf("counters: failures by cause %v do not add up to %d", got.FailedByCause, got.ReloadsFailed)
	}
	for _, g := range got.Groups {
		want := c.groups[g.Name]
		if want == nil {
			want = &groupCounters{}
		}
		if g.Respawns != want.respawns || g.Drains != want.drains || g.DeadlineKills != want.deadlineKills {
			return fmt.Sprintf("counters of group %s: %+v, seen %+v", g.Name, g, *want)
		}
	}
	for name, want := range c.groups {
		if *want != (groupCounters{}) && !slices.ContainsFunc(got.Groups, func(g control.GroupCounters) bool { return g.Name == name }) {
			return fmt.Sprintf("counters: group %s missing, seen %+v", name, *want)
		}
	}
	return ""
}

func workerOf(e Effect) WorkerID {
	switch e := e.(type) {
	case Signal:
		return e.Worker
	case Kill:
		return e.Worker
	}
	return 0
}

// checkStopOfServing: a generation that has not become ready never causes a
// serving worker of an older one to be stopped. A serving worker is stopped
// only when sockshim stops, or when its group has a ready worker of a newer
// generation, or its group or slot left the config.
func (c *checker) checkStopOfServing(id WorkerID, wasServing bool, e Effect) string {
	m := c.m
	if !wasServing || m.stopping {
		return ""
	}
	w := c.find(id)
	if w == nil {
		return ""
	}
	if _, ok := e.(Kill); ok && w.state != Draining {
		return fmt.Sprintf("serving worker w%d killed outside a stop: %s", id, e)
	}
	if slices.Contains(m.retired, w.group) || w.slot >= len(w.group.slots) {
		return "" // its group left the config, or its slot a smaller count
	}
	if w.group.rollout.baking() {
		return fmt.Sprintf("ready worker w%d (gen %d) signalled while generation %d of %s bakes", id, w.gen, w.group.rollout.gen, w.group.cfg.Name)
	}
	// The newer worker serves in its slot: promoted, not merely ready.
	for _, x := range m.workers {
		if x.group == w.group && x.state == Ready && x.role == inSlot && x.gen > w.gen {
			return ""
		}
	}
	return fmt.Sprintf("ready worker w%d (gen %d) signalled while no newer generation of %s serves in a slot", id, w.gen, w.group.cfg.Name)
}

// checkPromotion: with promote_after, a new worker takes its slot only
// after a bake: its own (the canary, or each of a parallel generation),
// which lasted promote_after, with a passed health probe when one is set and
// no failure in its generation; or its canary's, once that was promoted.
func (c *checker) checkPromotion(now time.Time, wasCandidate, baked map[WorkerID]bool) string {
	for _, w := range c.m.workers {
		if !wasCandidate[w.id] || w.role != inSlot || w.cfg.PromoteAfter == 0 {
			continue
		}
		if !baked[w.id] {
			return fmt.Sprintf("w%d (%s, gen %d) took its slot without a bake", w.id, w, w.gen)
		}
		if !slices.Contains(c.bakingBefore, w.id) {
			continue // after its canary's promotion
		}
		if served := now.Sub(c.readySince[w.id]); served < w.cfg.PromoteAfter {
			return fmt.Sprintf("w%d (%s, gen %d) promoted after serving %s, less than promote_after %s", w.id, w, w.gen, served, w.cfg.PromoteAfter)
		}
		if healthProbe(w.cfg) != "" && c.healthOK[w.id] == 0 {
			return fmt.Sprintf("w%d (%s, gen %d) promoted without a passed health probe", w.id, w, w.gen)
		}
		if c.failedGen[w.gen] {
			return fmt.Sprintf("w%d (%s, gen %d) promoted though its generation failed", w.id, w, w.gen)
		}
	}
	return ""
}

// checkReloadSignal: a signal that does not drain its worker is the
// group's reload_signal, sent once to each serving worker of a group with
// reloadable = false, older than the reload, in the step that ends that
// reload with success; never on a failed or aborted reload.
func (c *checker) checkReloadSignal(w *worker, e Signal, wasServing, succeeded bool, r *reloadRun, sent map[WorkerID]bool) string {
	g := w.group
	switch {
	case !succeeded:
		return fmt.Sprintf("%s to w%d, which it does not drain, outside the success of a reload", e, w.id)
	case g.cfg.Reloadable || e.Signal != g.cfg.ReloadSignal:
		return fmt.Sprintf("%s to w%d, which it does not drain, is not the reload_signal of non-reloadable group %s", e, w.id, g.cfg.Name)
	case !wasServing || w.role != inSlot || w.state != Ready:
		return fmt.Sprintf("reload_signal to w%d, which was not serving in its slot", w.id)
	case w.gen >= r.gen:
		return fmt.Sprintf("reload_signal to w%d (gen %d), which the reload to gen %d started", w.id, w.gen, r.gen)
	case sent[w.id]:
		return fmt.Sprintf("reload_signal sent twice to w%d in one reload", w.id)
	}
	sent[w.id] = true
	return ""
}

// find looks a worker up among the live ones and, for one reaped in this
// step, nowhere: the caller treats that as nothing to check.
func (c *checker) find(id WorkerID) *worker { return c.m.find(id) }

// checkReady: the first READY=1 only when every slot is ready; later ones
// only to end a reload.
func (c *checker) checkReady(reloadBefore *reloadRun) string {
	m := c.m
	if !c.readyOnce {
		c.readyOnce = true
		if !m.allReady() {
			return "first READY=1 while a slot is not ready: " + m.statusLine()
		}
		return ""
	}
	if reloadBefore == nil || m.reload == reloadBefore {
		return "READY=1 outside the end of a reload"
	}
	return ""
}

func (c *checker) checkTimerOnlyWhenReady(Event) string { return "" }

// checkState checks the machine's bookkeeping after every step.
func (c *checker) checkState() string {
	m := c.m
	// No worker is forgotten: every worker started and not reaped is known.
	for id := range c.started {
		if m.find(id) == nil {
			return fmt.Sprintf("worker w%d forgotten: started, never reaped, unknown to the machine", id)
		}
	}
	for _, w := range m.workers {
		if !c.started[w.id] {
			return fmt.Sprintf("machine tracks w%d, which is reaped or was never started", w.id)
		}
		if w.state == Gone {
			return fmt.Sprintf("w%d is gone but still listed", w.id)
		}
		if !slices.Contains(m.groups, w.group) && !slices.Contains(m.retired, w.group) {
			return fmt.Sprintf("w%d belongs to a group the machine no longer knows", w.id)
		}
		if m.stopping && w.state != Draining && w.killed == "" {
			return fmt.Sprintf("stopping, but w%d (%s) was neither drained nor killed", w.id, w.state)
		}
		if m.stopping && !c.stopped[w.id] {
			return fmt.Sprintf("stopping, but w%d got no signal", w.id)
		}
	}
	for _, g := range m.groups {
		live := 0
		for i, sl := range g.slots {
			if sl.cur == nil {
				continue
			}
			if sl.cur.role != inSlot || sl.cur.slot != i || m.find(sl.cur.id) == nil {
				return fmt.Sprintf("slot %s[%d] holds w%d, which is not its live worker", g.cfg.Name, i, sl.cur.id)
			}
			if sl.cur.state != Draining {
				live++
			}
		}
		limit := len(g.slots)
		if ro := g.rollout; ro != nil {
			for _, w := range ro.pending() {
				if w.state != Draining {
					live++
				}
			}
			starting := 0
			for _, w := range ro.pending() {
				if w.state == Starting {
					starting++
				}
			}
			if starting > max(ro.cfg.Surge, 1) {
				return fmt.Sprintf("group %s has %d new workers starting at once, more than surge = %d allows", g.cfg.Name, starting, ro.cfg.Surge)
			}
			if ro.parallel() {
				limit += len(ro.workers)
			} else {
				limit = max(limit, len(ro.workers)) + max(ro.cfg.Surge, 1)
			}
		}
		if live > limit {
			return fmt.Sprintf("group %s runs %d workers that are not draining, more than %d", g.cfg.Name, live, limit)
		}
	}
	if m.Done() && len(c.started) > 0 {
		return fmt.Sprintf("done with %d workers still running", len(c.started))
	}
	return ""
}

// quiet checks what must hold once the world only made progress for a
// while: no reload hangs, no request waits, every slot serves.
func (c *checker) quiet() string {
	m := c.m
	if m.reload != nil || len(m.pending) > 0 {
		return fmt.Sprintf("reload hangs: %d callers waiting, status %q", len(m.pending), m.statusLine())
	}
	if !m.allReady() {
		return "a slot does not serve after quiescence: " + m.statusLine()
	}
	return ""
}

// final checks what must hold once a stop has ended.
func (c *checker) final() string {
	var missing []string
	for _, id := range c.asked {
		if c.answered[id] != 1 {
			missing = append(missing, fmt.Sprint(id))
		}
	}
	if len(missing) > 0 {
		return "reload requests never answered: " + strings.Join(missing, ", ")
	}
	return ""
}

var _ = config.ReadyNotify
