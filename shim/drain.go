package shim

import (
	"slices"
	"time"
)

// drain tells a worker to finish its in-flight work and exit: stop_signal
// now, SIGKILL to its process group at drain_timeout. It also enforces
// max_draining, so old generations that never finish cannot pile up.
func (s *Supervisor) drain(w *worker) {
	if w.state == draining || !w.live() {
		return
	}
	w.stopTimer()
	w.state = draining
	g := w.group
	g.draining = append(g.draining, w)
	s.log.Info("draining worker", "worker", w, "pid", w.pid, "generation", w.gen, "signal", w.cfg.StopSignal)
	if err := w.signal(w.cfg.StopSignal); err != nil {
		s.log.Error("signalling worker failed", "err", err)
	}
	w.timer = time.AfterFunc(w.cfg.DrainTimeout, func() { s.post(drainExpired{w: w}) })
	s.limitDraining(g)
}

// limitDraining kills the oldest draining generations of g while more than
// max_draining generations are draining.
func (s *Supervisor) limitDraining(g *group) {
	limit := max(g.cfg.MaxDraining, 1)
	for {
		var gens []int
		for _, w := range g.draining {
			if w.live() && w.killed == "" && !slices.Contains(gens, w.gen) {
				gens = append(gens, w.gen)
			}
		}
		if len(gens) <= limit {
			return
		}
		oldest := slices.Min(gens)
		s.log.Warn("too many generations draining; killing the oldest early", "group", g.cfg.Name,
			"generation", oldest, "draining_generations", len(gens), "max_draining", limit)
		for _, w := range g.draining {
			if w.gen == oldest && w.live() {
				w.killed = "max_draining exceeded"
				w.kill()
			}
		}
	}
}

// forgetRetired drops removed groups once their last worker is gone.
func (s *Supervisor) forgetRetired() {
	s.retired = slices.DeleteFunc(s.retired, func(g *group) bool {
		for _, w := range g.draining {
			if w.live() {
				return false
			}
		}
		return true
	})
}
