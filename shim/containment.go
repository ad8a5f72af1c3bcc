package shim

import (
	"github.com/sockshim/sockshim/internal/cgroup"
	"github.com/sockshim/sockshim/internal/contain"
	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/shim/core"
	"golang.org/x/sys/unix"
)

// contain chooses how workers' processes are held: cgroups when sockshim's
// cgroup is delegated to it, the subreaper otherwise.
func (s *Supervisor) contain() error {
	tree, why := cgroup.Detect()
	if tree != nil {
		err := tree.Enter("supervisor")
		if err == nil {
			s.cgroups = tree
			s.log.Info("containment: a cgroup per worker", "cgroup", tree.Dir(), "memory", tree.Memory())
			return nil
		}
		why = err.Error()
	}
	r, err := contain.NewReaper(s.log)
	if err != nil {
		return err
	}
	s.reaper = r
	s.log.Info("containment: subreaper", "reason", why)
	return nil
}

// reaped releases what a worker's process held once the machine hears of its
// exit, and kills what it left behind in its cgroup, or else its process
// group: nothing supervises those.
func (s *Supervisor) reaped(id core.WorkerID) {
	p := s.procs[id]
	if p == nil {
		return
	}
	delete(s.procs, id)
	p.proxy.Close()
	if p.cg != nil {
		s.removeCgroup(p.name, p.cg)
		return
	}
	if unix.Kill(-p.pid, unix.SIGKILL) == nil {
		s.log.Warn("killed processes the worker left behind in its process group", "worker", p.name, "pgid", p.pid)
	}
}

// addUsage fills in each worker's CPU time and memory from its cgroup.
func (s *Supervisor) addUsage(st *control.Status) {
	byPID := map[int]*proc{}
	for _, p := range s.procs {
		byPID[p.pid] = p
	}
	for i := range st.Groups {
		for j := range st.Groups[i].Workers {
			w := &st.Groups[i].Workers[j]
			p := byPID[w.PID]
			if p == nil || p.cg == nil {
				continue
			}
			u, err := p.cg.Usage()
			if err != nil {
				s.log.Warn("reading worker's cgroup usage", "worker", p.name, "err", err)
				continue
			}
			w.CPU = &u.CPU
			if u.Memory >= 0 {
				w.Memory = &u.Memory
			}
		}
	}
}
