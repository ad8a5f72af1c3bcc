package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/internal/procfs"
	"github.com/sockshim/sockshim/testenv"
)

// This file accounts for the CPU time one reload costs, by who spends it,
// without load: the floor rows of the report say how much a reload slows
// the clients, this says what the machine does for it. Every process is
// counted once, when its parent has reaped it (the cutime and cstime of
// /proc/PID/stat): the workers a reload replaces by whoever started them,
// the ExecReload= processes by the service manager, systemctl by the
// harness.

// reloadCPU is the CPU time of one round, by who spent it.
type reloadCPU struct {
	workers    time.Duration // the 4 replaced workers, start to exit; with sockshim, through the trampoline
	supervisor time.Duration // sockshim itself
	control    time.Duration // the ExecReload= process, with systemd's fork for it
	systemctl  time.Duration // systemctl, as the harness runs it
	manager    time.Duration // the service manager itself
}

func (c reloadCPU) total() time.Duration {
	return c.workers + c.supervisor + c.control + c.systemctl + c.manager
}

// procTimes returns the CPU time a process spent itself and that of the
// children it reaped.
func procTimes(tb testing.TB, pid int) (own, reaped time.Duration) {
	st, err := procfs.ReadStat(pid)
	if err != nil {
		tb.Fatal(err)
	}
	tick := time.Second / procfs.TicksPerSecond
	return time.Duration(st.CPU) * tick, time.Duration(st.Reaped) * tick
}

// cpuRounds runs round n times without load, one every cycle, and returns
// the CPU time per round. sup is sockshim's pid, 0 without sockshim; the
// harness's reaped children are systemctl and, when round replaces workers
// itself, those.
func cpuRounds(tb testing.TB, m *testenv.Manager, sup, n int, cycle time.Duration, round func()) reloadCPU {
	type sample struct{ mOwn, mReaped, hReaped, sOwn, sReaped time.Duration }
	take := func() (s sample) {
		s.mOwn, s.mReaped = procTimes(tb, m.PID)
		_, s.hReaped = procTimes(tb, os.Getpid())
		if sup != 0 {
			s.sOwn, s.sReaped = procTimes(tb, sup)
		}
		return s
	}
	before := take()
	paced(n, cycle, round)
	time.Sleep(cycle) // the last replaced workers are reaped by now
	after := take()
	per := func(a, b time.Duration) time.Duration { return (b - a) / time.Duration(n) }
	return reloadCPU{
		workers:    per(before.sReaped, after.sReaped),
		supervisor: per(before.sOwn, after.sOwn),
		control:    per(before.mReaped, after.mReaped),
		systemctl:  per(before.hReaped, after.hReaped),
		manager:    per(before.mOwn, after.mOwn),
	}
}

// reloadCPUReport measures n rounds of each: `systemctl reload` of a unit
// whose ExecReload= is /bin/true; that, and the harness replaces 4 workers
// one at a time; sockshim's rolling reload of 4 workers. Nobody sends
// requests; the workers only start, become ready and exit.
func reloadCPUReport(tb testing.TB, m *testenv.Manager, bb bins, n int, cycle time.Duration) string {
	noopRound := noopReload(tb, m, bb, "bench-cpu-noop", false)
	noop := cpuRounds(tb, m, 0, n, cycle, func() { noopRound(nil, nil, nil) })

	fw := startFloorWorkers(tb, m, bb, "bench-cpu-home")
	replaceRound := noopReload(tb, m, bb, "bench-cpu-replace", true)
	replace := cpuRounds(tb, m, 0, n, cycle, func() { fw.run(replaceRound) })
	fw.stop()
	// The harness reaped its workers and systemctl alike; systemctl costs
	// what it did in the first series.
	replace.workers, replace.systemctl = replace.systemctl-noop.systemctl, noop.systemctl

	sockshimRound := idleSockshimReload(tb, m, bb, "bench-cpu-sockshim")
	sup := m.MainPID(tb, "bench-cpu-sockshim.service")
	withSockshim := cpuRounds(tb, m, sup, n, cycle, func() { sockshimRound(nil, nil, nil) })

	var sb strings.Builder
	fmt.Fprintf(&sb, "## Where a reload's CPU time goes\n\nWithout load, %d rounds of each, one every %s; CPU time per round, from each process's parent once it reaped it (`/proc/PID/stat`, 10 ms ticks summed over all rounds).\n\n", n, cycle.Round(time.Millisecond))
	sb.WriteString("| spent by | `systemctl reload`, `ExecReload=/bin/true` | the same, and the harness replaces 4 workers | sockshim's rolling reload of 4 workers |\n|---|---|---|---|\n")
	cell := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	for _, r := range []struct {
		name string
		get  func(reloadCPU) time.Duration
	}{
		{"the 4 replaced workers, start to exit (with sockshim: through the trampoline)", func(c reloadCPU) time.Duration { return c.workers }},
		{"sockshim", func(c reloadCPU) time.Duration { return c.supervisor }},
		{"the `ExecReload=` process (/bin/true or `sockshim reload`), with systemd's fork for it", func(c reloadCPU) time.Duration { return c.control }},
		{"systemctl", func(c reloadCPU) time.Duration { return c.systemctl }},
		{"the service manager", func(c reloadCPU) time.Duration { return c.manager }},
		{"**all**", reloadCPU.total},
	} {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s |\n", r.name, cell(r.get(noop)), cell(r.get(replace)), cell(r.get(withSockshim)))
	}
	inService := func(c reloadCPU) time.Duration { return c.workers + c.supervisor + c.control }
	fmt.Fprintf(&sb, "\nInside the service, whose CPU share its serving workers need under load (the replaced workers, sockshim and the `ExecReload=` process), sockshim's reload spends %s per reload, %.2f× the %s of the harness's bare replacement of the same 4 workers; systemctl and the service manager run outside it.\n\n",
		cell(inService(withSockshim)), float64(inService(withSockshim))/float64(inService(replace)), cell(inService(replace)))
	return sb.String()
}
