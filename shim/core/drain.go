package core

import (
	"errors"
	"log/slog"
	"slices"
)

// drain tells a worker to finish its in-flight work and exit: stop_signal
// now, SIGKILL to its process group at drain_timeout. It also enforces
// max_draining, so old generations that never finish cannot pile up.
func (m *Machine) drain(w *worker) {
	if w.state == Draining || w.state == Gone {
		return
	}
	m.stopReadiness(w)
	w.state = Draining
	m.counters.group(w.group.cfg.Name).drains++
	m.log(slog.LevelInfo, "draining worker", "worker", w, "pid", w.pid, "generation", w.gen, "signal", w.cfg.StopSignal)
	m.emit(Signal{Worker: w.id, Signal: w.cfg.StopSignal})
	w.drainTimer = m.setTimer(w.cfg.DrainTimeout, timer{kind: drainDeadline, w: w})
	m.limitDraining(w.group)
}

// retireWorker takes w out of its slot or rollout for good and drains it.
func (m *Machine) retireWorker(w *worker) {
	w.role = retiring
	m.drain(w)
}

// dropCandidates retires the rollout's candidates that have not taken their
// slot.
func (m *Machine) dropCandidates(ro *rollout) {
	for _, p := range ro.pending() {
		m.retireWorker(p)
	}
}

// kill SIGKILLs a live worker's process group, once.
func (m *Machine) kill(w *worker, why string) {
	if w.state == Gone || w.killed != "" {
		return
	}
	w.killed = why
	m.emit(Kill{Worker: w.id, Reason: why})
}

// limitDraining kills the oldest draining generations of g while more than
// max_draining generations are draining.
func (m *Machine) limitDraining(g *group) {
	limit := max(g.cfg.MaxDraining, 1)
	for {
		var gens []int
		for _, w := range m.workers {
			if w.group == g && w.state == Draining && w.killed == "" && !slices.Contains(gens, w.gen) {
				gens = append(gens, w.gen)
			}
		}
		if len(gens) <= limit {
			return
		}
		oldest := slices.Min(gens)
		m.log(slog.LevelWarn, "too many generations draining; killing the oldest early", "group", g.cfg.Name,
			"generation", oldest, "draining_generations", len(gens), "max_draining", limit)
		for _, w := range m.workers {
			if w.group == g && w.state == Draining && w.gen == oldest {
				m.kill(w, "max_draining exceeded")
			}
		}
	}
}

// stop drains every worker, or kills every one when forced; the machine is
// Done once all are reaped.
func (m *Machine) stop(force bool) {
	if !m.stopping {
		m.stopping = true
		m.log(slog.LevelInfo, "stopping: draining all workers")
		m.notify("STOPPING=1", "STATUS=stopping")
		m.lastStatus = ""
		m.abortReload(errors.New("sockshim is stopping"))
		for _, g := range m.groups {
			for _, sl := range g.slots {
				m.cancelTimer(&sl.respawnTimer)
			}
		}
	}
	for _, w := range m.workers {
		if force {
			m.kill(w, "forced stop")
		} else {
			m.drain(w)
		}
	}
}

// forgetRetired drops removed groups once their last worker is gone.
func (m *Machine) forgetRetired() {
	m.retired = slices.DeleteFunc(m.retired, func(g *group) bool {
		return !slices.ContainsFunc(m.workers, func(w *worker) bool { return w.group == g })
	})
}
