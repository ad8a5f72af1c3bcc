package core

import (
	"slices"
	"time"

	"github.com/sockshim/sockshim/shim/control"
)

// Cause says why a reload failed. The set is fixed, so that a metric label
// made of it stays of bounded cardinality; the reload's answer carries the
// details.
type Cause string

// Reload failure causes.
const (
	CauseConfig       Cause = "config"        // the config did not load
	CauseSpawn        Cause = "spawn"         // a new worker could not be started
	CauseExit         Cause = "exit"          // a new worker exited before it was promoted
	CauseReadyTimeout Cause = "ready_timeout" // a new worker missed ready_timeout
	CauseHealth       Cause = "health"        // a health probe failed during the bake time
	CauseStopped      Cause = "stopped"       // sockshim stopped while the reload ran
)

// Causes lists every Cause, in the order status and metrics show them.
var Causes = []Cause{CauseConfig, CauseSpawn, CauseExit, CauseReadyTimeout, CauseHealth, CauseStopped}

// ReloadBuckets are the upper bounds of the reload duration histogram. A
// histogram of fixed buckets is what Prometheus needs to compute quantiles
// over any window (histogram_quantile of rate), costs a fixed 14 integers,
// and adds up across instances; the last N durations would do neither.
var ReloadBuckets = []time.Duration{
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
	30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute,
}

// counters are totals since sockshim started: one source of truth for
// `sockshim status --json` and the metrics endpoint.
type counters struct {
	succeeded, failed int
	byCause           map[Cause]int
	buckets           []int // reloads that took at most ReloadBuckets[i]
	durations         int
	durationSum       time.Duration
	groups            map[string]*groupCounters // by group name, for sockshim's life
}

// groupCounters are one group's totals, kept across reloads that remove
// and re-add the group, so that counters never go back.
type groupCounters struct {
	respawns, drains, deadlineKills int
}

func (c *counters) group(name string) *groupCounters {
	if c.groups == nil {
		c.groups = map[string]*groupCounters{}
	}
	gc := c.groups[name]
	if gc == nil {
		gc = &groupCounters{}
		c.groups[name] = gc
	}
	return gc
}

// reloadEnded counts a reload run answered at now: began is when it was
// asked for, failed and cause how it ended.
func (m *Machine) reloadEnded(began time.Time, failed bool, cause Cause) {
	c := &m.counters
	if !failed {
		c.succeeded++
	} else {
		c.failed++
		if c.byCause == nil {
			c.byCause = map[Cause]int{}
		}
		c.byCause[cause]++
	}
	d := m.now.Sub(began)
	if c.buckets == nil {
		c.buckets = make([]int, len(ReloadBuckets))
	}
	for i, b := range ReloadBuckets {
		if d <= b {
			c.buckets[i]++
		}
	}
	c.durations++
	c.durationSum += d
}

// failCause records the first cause of the running reload's failure: the
// reload fails as a whole for it, whatever other groups report after.
func (m *Machine) failCause(c Cause) {
	if r := m.reload; r != nil && r.cause == "" {
		r.cause = c
	}
}

// countersStatus renders the counters for control.Status.
func (m *Machine) countersStatus() control.Counters {
	c := &m.counters
	out := control.Counters{
		ReloadsSucceeded: c.succeeded,
		ReloadsFailed:    c.failed,
		FailedByCause:    map[string]int{},
		ReloadDuration: control.Histogram{
			Count:   c.durations,
			Sum:     c.durationSum.Seconds(),
			Buckets: make([]control.Bucket, len(ReloadBuckets)),
		},
	}
	for _, cause := range Causes {
		out.FailedByCause[string(cause)] = c.byCause[cause]
	}
	for i, b := range ReloadBuckets {
		out.ReloadDuration.Buckets[i] = control.Bucket{UpperBound: b.Seconds()}
		if c.buckets != nil {
			out.ReloadDuration.Buckets[i].Count = c.buckets[i]
		}
	}
	names := make([]string, 0, len(c.groups))
	for name := range c.groups {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		gc := c.groups[name]
		out.Groups = append(out.Groups, control.GroupCounters{Name: name, Respawns: gc.respawns, Drains: gc.drains, DeadlineKills: gc.deadlineKills})
	}
	return out
}

// generationBegan notes when generation gen began, and forgets the
// generations that can no longer serve.
func (m *Machine) generationBegan(gen int) {
	if m.genStarted == nil {
		m.genStarted = map[int]time.Time{}
	}
	m.genStarted[gen] = m.now
	oldest := gen
	for _, w := range m.workers {
		oldest = min(oldest, w.gen)
	}
	for _, g := range m.groups {
		oldest = min(oldest, g.gen)
	}
	for g := range m.genStarted {
		if g < oldest {
			delete(m.genStarted, g)
		}
	}
}

// outcome says whether a settled reload failed, and why.
func (r *reloadRun) outcome() (failed bool, cause Cause) {
	return r.result.Err != nil, r.cause
}
