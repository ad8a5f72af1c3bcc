package shim

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sockshim/sockshim/shim/control"
)

// statusLine summarises the supervisor in one short line for systemctl
// status, e.g. "gen 3: web 4/4 ready; draining gen 2 (1)" or
// "gen 1: web 3/4 ready (web[1] crash loop: 5 restarts, next in 3s)".
// systemd drops notify datagrams over 4 KiB, so the line stays short.
func (s *Supervisor) statusLine() string {
	if s.stopping {
		return fmt.Sprintf("stopping: %d workers draining", len(s.liveWorkers()))
	}
	var parts, problems []string
	drainingByGen := map[int]int{}
	for _, g := range s.allGroups() {
		for _, w := range g.draining {
			if w.live() {
				drainingByGen[w.gen]++
			}
		}
	}
	for _, g := range s.groups {
		n := 0
		for id, sl := range g.slots {
			if sl.cur != nil && sl.cur.state == ready {
				n++
			}
			if sl.cur == nil && sl.failures > 1 {
				wait := max(time.Until(sl.respawnAt).Round(time.Second), 0)
				problems = append(problems, fmt.Sprintf("%s[%d] crash loop: %d restarts, next in %s", g.cfg.Name, id, sl.restarts, wait))
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d ready", g.cfg.Name, n, len(g.slots)))
	}
	line := fmt.Sprintf("gen %d: %s", s.servingGen(), strings.Join(parts, ", "))
	if s.reload != nil {
		line += fmt.Sprintf("; reloading to gen %d", s.reload.gen)
	}
	if len(drainingByGen) > 0 {
		var d []string
		for _, gen := range slices.Sorted(mapKeys(drainingByGen)) {
			d = append(d, fmt.Sprintf("gen %d (%d)", gen, drainingByGen[gen]))
		}
		line += "; draining " + strings.Join(d, ", ")
	}
	if len(problems) > 0 {
		if len(problems) > 3 {
			problems = append(problems[:3], fmt.Sprintf("+%d more", len(problems)-3))
		}
		line += " (" + strings.Join(problems, "; ") + ")"
	}
	return line
}

func mapKeys(m map[int]int) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// servingGen is the newest generation any group serves.
func (s *Supervisor) servingGen() int {
	gen := 0
	for _, g := range s.groups {
		for _, sl := range g.slots {
			if sl.cur != nil && sl.cur.gen > gen {
				gen = sl.cur.gen
			}
		}
	}
	if gen == 0 {
		gen = 1
	}
	return gen
}

func (s *Supervisor) snapshot() control.Status {
	st := control.Status{
		PID:        os.Getpid(),
		Config:     s.cfg.Path,
		Generation: s.servingGen(),
		State:      "serving",
		Line:       s.statusLine(),
		Started:    s.started,
		Reloads:    s.reloads,
	}
	switch {
	case s.stopping:
		st.State = "stopping"
	case s.reload != nil:
		st.State = "reloading"
	case !s.readySent:
		st.State = "starting"
	}
	now := s.now()
	for _, g := range s.allGroups() {
		gs := control.GroupStatus{Name: g.cfg.Name, Count: len(g.slots), Reloadable: g.cfg.Reloadable}
		add := func(w *worker, restarts int) {
			ws := control.WorkerStatus{ID: w.id, PID: w.pid, Generation: w.gen, State: w.state.String(),
				Started: w.started, ReadyAt: w.readyAt, Uptime: now.Sub(w.started), Restarts: restarts, Status: w.status}
			gs.Workers = append(gs.Workers, ws)
		}
		for _, sl := range g.slots {
			if sl.cur != nil {
				add(sl.cur, sl.restarts)
			}
		}
		if g.rollout != nil {
			for _, w := range g.rollout.pending() {
				add(w, 0)
			}
		}
		for _, w := range g.draining {
			if w.live() {
				add(w, 0)
			}
		}
		st.Groups = append(st.Groups, gs)
	}
	return st
}
