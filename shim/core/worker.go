package core

import (
	"fmt"
	"syscall"
	"time"

	"github.com/sockshim/sockshim/shim/config"
)

// State is where a worker process is in its life.
type State int

// Worker states.
const (
	Starting State = iota // started, not yet ready
	Ready                 // serving
	Draining              // told to stop; finishing in-flight work
	Gone                  // reaped, or never ran
)

func (s State) String() string {
	return [...]string{"starting", "ready", "draining", "exited"}[s]
}

// role is a worker's one place in its group; what its exit means follows
// from it.
type role int

const (
	// inSlot: it is g.slots[slot].cur. Its exit (even while draining after
	// a missed ready_timeout) leaves the slot to be refilled.
	inSlot role = iota
	// candidate: a new worker of a rollout, g.rollout.workers[slot], not
	// yet serving in its slot. Its failure ends the rollout.
	candidate
	// retiring: drained for good, in no slot; its exit changes nothing.
	retiring
)

// worker is one process of one generation of a group.
type worker struct {
	id    WorkerID
	group *group
	cfg   config.Worker // the config it was started with
	slot  int           // 0…count-1, stable across generations
	gen   int
	pid   int // 0 until Spawned
	state State
	role  role

	started, readyAt time.Time

	readyTimer, delayTimer, drainTimer TimerID
	probing                            bool
	timedOut                           bool // its ready_timeout passed

	killed  string   // why sockshim SIGKILLed it
	failure string   // why it failed, for the reload's answer
	tail    []string // its last stderr lines
	status  string   // its own last STATUS=, made printable

	// The last reload_signal sent to it, so that its exit can be told
	// apart from an unrelated crash.
	reloadSignal   syscall.Signal
	reloadSignalAt time.Time
}

func (w *worker) String() string { return fmt.Sprintf("%s[%d]", w.cfg.Name, w.slot) }

// group is the runtime side of one [[worker]] entry.
type group struct {
	cfg     config.Worker // config of the workers its slots get
	gen     int           // generation new workers of its slots get
	slots   []*slot       // index is the worker's slot
	rollout *rollout      // while a reload replaces its workers

	reloadSignals    int       // reloads that sent reload_signal to its workers
	lastReloadSignal time.Time // when the last one did
}

// slot is one worker id of a group: the worker filling it and the crash-loop
// accounting that outlives single processes.
type slot struct {
	cur          *worker // nil while a respawn is pending
	failures     int     // consecutive failures, reset by a stable run
	restarts     int     // respawns scheduled, for status
	respawnAt    time.Time
	respawnTimer TimerID
}

func newGroup(gc config.Worker, gen, slots int) *group {
	g := &group{cfg: gc, gen: gen, slots: make([]*slot, slots)}
	for i := range g.slots {
		g.slots[i] = &slot{}
	}
	return g
}

// rollout replaces one group's workers during a reload.
type rollout struct {
	cfg      config.Worker
	gen      int
	workers  []*worker // candidates by slot; nil until started
	next     int       // next slot to start
	canaryOK bool
	bake     *bake // promote_after: set once the first new workers are ready
}

// pending returns the rollout's candidates that have not taken their slot.
func (ro *rollout) pending() []*worker {
	var ws []*worker
	for _, w := range ro.workers {
		if w != nil && w.role == candidate {
			ws = append(ws, w)
		}
	}
	return ws
}

// awaitsCandidate reports whether a live candidate of a rollout is on its
// way into slot id.
func (g *group) awaitsCandidate(id int) bool {
	ro := g.rollout
	return ro != nil && id < len(ro.workers) && ro.workers[id] != nil && ro.workers[id].role == candidate && ro.workers[id].state != Gone
}

func (ro *rollout) parallel() bool { return ro.cfg.Strategy == config.StrategyParallel }
