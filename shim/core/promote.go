package core

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/sockshim/sockshim/shim/config"
)

// Health-gated promotion (promote_after > 0). Once a group's new workers
// are ready, they bake: they serve from the shared sockets beside the old
// workers for promote_after, and take their slots (the old workers drain,
// the rollout goes on) only if none of them exited and every health probe
// run during the bake passed, at least one per worker. Any failure fails the
// reload as a candidate failure does before it is ready: the new workers
// drain, the old ones serve on untouched.
//
// What bakes depends on the strategy:
//   - rolling: the canary alone. The workers after it start once it is
//     promoted, as today, without a bake of their own: the bake answers
//     "does the new code survive real traffic", which the canary already
//     did, and a bake per step would make a reload count × promote_after
//     long.
//   - parallel: the whole new generation, once all of it is ready.
//
// A baking worker stays a candidate: its exit fails the rollout and is never
// respawned, and the group's slots keep the old generation's config, so an
// old worker that crashes meanwhile comes back as it was.

// bake is a group's rollout while its new workers bake, and after.
type bake struct {
	workers []*worker // baking: the canary, or every new worker
	started time.Time
	timer   TimerID
	passes  map[WorkerID]int // health probes passed, per worker
	due     bool             // promote_after is over; waiting for a first probe
	done    bool             // promoted: the rest of the rollout does not bake
}

// healthProbe names the group's health probe, or "" when it has none.
func healthProbe(cfg config.Worker) string {
	switch {
	case len(cfg.HealthCommand) > 0:
		return "health_command"
	case cfg.HealthURL != "":
		return "health_url"
	}
	return ""
}

// shouldBake reports whether the rollout's ready workers bake before they
// take their slots.
func (ro *rollout) shouldBake() bool {
	return ro.cfg.PromoteAfter > 0 && (ro.bake == nil || !ro.bake.done)
}

// baking reports whether the rollout waits for a bake to end.
func (ro *rollout) baking() bool { return ro != nil && ro.bake != nil && !ro.bake.done }

// startBake starts promote_after for ws, the group's ready new workers.
func (m *Machine) startBake(g *group, ws []*worker) {
	ro := g.rollout
	b := &bake{workers: ws, started: m.now, passes: map[WorkerID]int{}}
	ro.bake = b
	b.timer = m.setTimer(ro.cfg.PromoteAfter, timer{kind: bakeEnd, g: g})
	probe := healthProbe(ro.cfg)
	// The reload waits for the bake and one last probe at most; never
	// less than the ready_timeout the step before asked for.
	m.extendTimeout(max(ro.cfg.PromoteAfter+ro.cfg.HealthInterval, ro.cfg.ReadyTimeout) + 5*time.Second)
	for _, w := range ws {
		if probe != "" {
			w.probing = true
			m.emit(StartHealth{Worker: w.id, PID: w.pid, Slot: w.slot, Gen: w.gen, Config: w.cfg})
		}
	}
	what := g.cfg.Name + ": generation " + fmt.Sprint(ro.gen)
	if !ro.parallel() {
		what = ws[0].String() + ": the canary"
	}
	how := "no health probe"
	if probe != "" {
		how = fmt.Sprintf("%s every %s", probe, ro.cfg.HealthInterval)
	}
	m.log(slog.LevelInfo, "baking before promotion", "group", g.cfg.Name, "generation", ro.gen, "workers", len(ws),
		"promote_after", ro.cfg.PromoteAfter, "probe", how)
	m.progress("%s serves beside the old workers for promote_after (%s, %s) before promotion", what, ro.cfg.PromoteAfter, how)
}

// onBakeEnd: promote_after is over for g's rollout.
func (m *Machine) onBakeEnd(g *group) {
	ro := g.rollout
	if !ro.baking() {
		return
	}
	ro.bake.timer = 0
	ro.bake.due = true
	m.promoteIfDue(g)
}

// promoteIfDue promotes the baked workers once promote_after is over and
// each passed a health probe.
func (m *Machine) promoteIfDue(g *group) {
	ro := g.rollout
	b := ro.bake
	if !b.due {
		return
	}
	probe := healthProbe(ro.cfg)
	passed := 0
	for _, w := range b.workers {
		if probe != "" && b.passes[w.id] == 0 {
			return // its first probe is still running; bounded by health_interval
		}
		passed += b.passes[w.id]
	}
	b.done = true
	for _, w := range b.workers {
		if w.probing {
			w.probing = false
			m.emit(StopProbe{Worker: w.id})
		}
	}
	took := m.now.Sub(b.started).Round(time.Millisecond)
	m.log(slog.LevelInfo, "promoted", "group", g.cfg.Name, "generation", ro.gen, "baked", took, "health_probes_passed", passed)
	if probe != "" {
		m.progress("%s: generation %d promoted after %s (%d %s run%s passed)", g.cfg.Name, ro.gen, took, passed, probe, plural(passed))
	} else {
		m.progress("%s: generation %d promoted after %s", g.cfg.Name, ro.gen, took)
	}
	if !ro.parallel() && len(ro.workers) > 1 {
		m.extendTimeout(ro.cfg.ReadyTimeout + 5*time.Second) // the next workers start now
	}
	m.serveReady(g, b.workers[0])
}

// onHealthChecked counts a passed probe, or fails the rollout.
func (m *Machine) onHealthChecked(w *worker, err error) {
	ro := w.group.rollout
	if !w.probing || w.state != Ready || w.role != candidate || !ro.baking() || !m.inBake(w) {
		return // a run that ended after its probe was stopped
	}
	if err == nil {
		ro.bake.passes[w.id]++
		m.promoteIfDue(w.group)
		return
	}
	m.log(slog.LevelError, "health probe failed during promote_after", "worker", w, "pid", w.pid, "generation", w.gen, "err", err)
	w.failure = fmt.Sprintf("failed its %s %s into promote_after (%s): %v", healthProbe(ro.cfg),
		m.now.Sub(ro.bake.started).Round(100*time.Millisecond), ro.cfg.PromoteAfter, err)
	m.failCause(CauseHealth)
	m.rolloutFailed(w)
}

// inBake reports whether w is one of the workers baking in its rollout.
func (m *Machine) inBake(w *worker) bool {
	ro := w.group.rollout
	if !ro.baking() {
		return false
	}
	for _, x := range ro.bake.workers {
		if x == w {
			return true
		}
	}
	return false
}

// bakeExit describes the exit of a baking worker.
func (m *Machine) bakeExit(w *worker, status string) string {
	ro := w.group.rollout
	return fmt.Sprintf("exited %s into promote_after (%s): %s",
		m.now.Sub(ro.bake.started).Round(100*time.Millisecond), ro.cfg.PromoteAfter, status)
}

// bakeRole names what a baking worker is, for the reload's answer.
func (m *Machine) bakeRole(w *worker) string {
	switch {
	case !m.inBake(w):
		return ""
	case w.group.rollout.parallel():
		return "new worker "
	}
	return "canary "
}

// endBake cancels what is left of a rollout's bake as the rollout ends;
// drain and reap stop the probes of its workers.
func (m *Machine) endBake(ro *rollout) {
	if ro != nil && ro.bake != nil {
		m.cancelTimer(&ro.bake.timer)
	}
}

// bakeStatus is the status line's note on bakes in progress, e.g.
// " (baking: web 2s left)".
func (m *Machine) bakeStatus() string {
	var parts []string
	for _, g := range m.groups {
		ro := g.rollout
		if !ro.baking() {
			continue
		}
		left := max(ro.bake.started.Add(ro.cfg.PromoteAfter).Sub(m.now), 0).Round(time.Second)
		if ro.bake.due {
			parts = append(parts, g.cfg.Name+" awaits a health probe")
		} else {
			parts = append(parts, fmt.Sprintf("%s %s left", g.cfg.Name, left))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (baking: " + strings.Join(parts, ", ") + ")"
}

// baking reports whether a reload's new workers bake now.
func (m *Machine) baking() bool {
	for _, g := range m.groups {
		if g.rollout.baking() {
			return true
		}
	}
	return false
}
