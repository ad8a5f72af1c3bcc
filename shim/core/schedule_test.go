package core

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/notify"
)

var (
	schedules = flag.Int("schedules", 100_000, "random schedules TestRandomSchedules runs")
	budget    = flag.Duration("schedule-budget", 25*time.Second, "time after which TestRandomSchedules stops early")
	seed      = flag.Uint64("seed", 0, "run only the schedule of this seed")
)

// TestRandomSchedules drives machines with random interleavings of every
// event (spawns failing at once, workers exiting before, during and after
// ready, timers firing late or after being cancelled, reloads and config
// changes good and bad in every phase, stops at any moment) and checks the
// invariants of checker after every step. A violation prints the seed and
// a shortened schedule that still breaks it. Run millions with
// `go test ./shim/core -run TestRandomSchedules -schedules 5000000 -schedule-budget 1h`.
func TestRandomSchedules(t *testing.T) {
	if *seed != 0 {
		if v := runSchedule(*seed); v != nil {
			t.Fatal(v.report())
		}
		return
	}
	start := time.Now()
	steps, n := 0, 0
	for ; n < *schedules && time.Since(start) < *budget; n++ {
		s := uint64(n) + 1
		v := runSchedule(s)
		if v != nil {
			t.Fatal(v.report())
		}
		steps += lastSteps
	}
	t.Logf("%d schedules, %d steps, 0 violations in %s", n, steps, time.Since(start).Round(time.Millisecond))
	if n < 1000 {
		t.Errorf("only %d schedules ran within %s", n, *budget)
	}
}

var lastSteps int

// violation is an invariant broken by a schedule.
type violation struct {
	seed     uint64
	msg      string
	schedule *schedule
}

// schedule is what a run can be replayed from: the first config, the events
// from outside (a worker exits, a timer fires, a caller asks…) and the
// outcomes the executor would have known at once, in the order they were
// asked for. Shrinking drops outside events and keeps the outcomes.
type schedule struct {
	cfg        *config.Config
	events     []Event
	spawnFails []bool
	configs    []ConfigLoaded
}

func (v *violation) report() string {
	short := shrink(v.schedule, v.msg)
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %s\nreproduce: go test ./shim/core -run TestRandomSchedules -seed %d\nshortened schedule (%d of %d events from outside), first config %s:\n",
		v.seed, v.msg, v.seed, len(short.events), len(v.schedule.events), configString(short.cfg))
	w := newWorld(short, nil)
	for _, ev := range short.events {
		w.fed = nil
		fmt.Fprintf(&b, "\t%s\n", eventString(ev))
		func() {
			defer func() { _ = recover() }()
			w.replayStep(ev)
		}()
		for _, e := range w.fed {
			if l, ok := e.(Log); !ok || l.Level >= slog.LevelWarn {
				fmt.Fprintf(&b, "\t\t→ %s\n", e)
			}
		}
	}
	return b.String()
}

func configString(cfg *config.Config) string {
	var gs []string
	for _, w := range cfg.Workers {
		gs = append(gs, fmt.Sprintf("%s×%d %s surge=%d ready=%s reloadable=%v reload_signal=%d promote_after=%s health=%q", w.Name, w.Count, w.Strategy, w.Surge, w.Ready, w.Reloadable, w.ReloadSignal, w.PromoteAfter, healthProbe(w)))
	}
	return "{" + strings.Join(gs, "; ") + "}"
}

func eventString(ev Event) string {
	switch ev := ev.(type) {
	case Notified:
		return fmt.Sprintf("Notified{w%d %v}", ev.Worker, ev.Msg.Fields)
	case quiesced:
		return "(at rest: check that no reload hangs and every slot serves)"
	}
	return fmt.Sprintf("%T%+v", ev, ev)
}

// shrink drops outside events while the same invariant still breaks.
func shrink(sc *schedule, msg string) *schedule {
	key, _, _ := strings.Cut(msg, ":")
	fails := func(events []Event) bool {
		v := replay(&schedule{cfg: sc.cfg, events: events, spawnFails: sc.spawnFails, configs: sc.configs})
		return v != nil && strings.HasPrefix(v.msg, key)
	}
	events := sc.events
	for chunk := len(events) / 2; chunk >= 1; chunk /= 2 {
		for i := 1; i+chunk <= len(events); { // events[0] is Boot
			cand := slices.Concat(events[:i], events[i+chunk:])
			if fails(cand) {
				events = cand
			} else {
				i += chunk
			}
		}
	}
	return &schedule{cfg: sc.cfg, events: events, spawnFails: sc.spawnFails, configs: sc.configs}
}

// replay runs a recorded schedule through a fresh machine and checker.
func replay(sc *schedule) (v *violation) {
	w := newWorld(sc, nil)
	defer func() {
		if r := recover(); r != nil {
			v = &violation{msg: fmt.Sprintf("panic: %v", r), schedule: sc}
		}
	}()
	for _, ev := range sc.events {
		if msg := w.replayStep(ev); msg != "" {
			return &violation{msg: msg, schedule: sc}
		}
	}
	return nil
}

// replayStep feeds one recorded outside event, or skips it when what it
// speaks of does not exist in this replay (a shrunk schedule may have
// dropped the spawn it needs).
func (w *world) replayStep(ev Event) string {
	w.c.effects = nil
	switch ev := ev.(type) {
	case quiesced:
		return w.quiesce()
	case Exited:
		if w.procs[ev.Worker] == nil {
			return ""
		}
	case Notified:
		if w.procs[ev.Worker] == nil {
			return ""
		}
	case Probed:
		if w.procs[ev.Worker] == nil {
			return ""
		}
	case HealthChecked:
		if w.procs[ev.Worker] == nil {
			return ""
		}
	}
	return w.feed(ev)
}

// world plays the host: processes, timers, the config on disk.
type world struct {
	rng      *rand.Rand // nil when replaying
	m        *Machine
	c        *checker
	now      time.Time
	script   *schedule // recorded, or replayed
	spawns   int       // outcomes of script used so far
	loads    int
	queue    []Event // outcomes the executor knows at once
	procs    map[WorkerID]*simProc
	timers   map[TimerID]time.Time
	releases []int // gens awaiting Released
	waiters  WaiterID
	calm     bool // nothing fails: spawns succeed, configs load
	steps    int
	fed      []Effect // of the last feed, for reports
}

type simProc struct {
	signalled, killed, probing, stubborn bool
	reloadSignalled                      bool // got a reload_signal: it may die of it
	readyMode                            config.ReadyMode
	health, healthPassed                 bool // health probe running; one run passed
}

func randomConfig(rng *rand.Rand) *config.Config {
	cfg := &config.Config{Path: "app.toml"}
	for _, name := range []string{"a", "b", "c"}[:1+rng.IntN(3)] {
		if rng.IntN(4) == 0 && len(cfg.Workers) > 0 {
			continue // groups come and go between configs
		}
		w := config.Worker{
			Name: name, Command: []string{name}, Count: 1 + rng.IntN(4),
			Ready:      []config.ReadyMode{config.ReadyNotify, config.ReadyNotify, config.ReadyDelay, config.ReadyCommand, config.ReadyAccepting}[rng.IntN(5)],
			ReadyDelay: time.Duration(1+rng.IntN(3)) * time.Second, ReadyTimeout: time.Duration(5+rng.IntN(30)) * time.Second,
			Strategy:    []config.Strategy{config.StrategyRolling, config.StrategyParallel}[rng.IntN(2)],
			Surge:       rng.IntN(3),
			MaxDraining: 1 + rng.IntN(3), StopSignal: syscall.SIGTERM,
			DrainTimeout: time.Duration(1+rng.IntN(30)) * time.Second, Reloadable: rng.IntN(5) > 0,
		}
		if w.Strategy == config.StrategyParallel {
			// What the config allows: 1 or more at a time, all by default.
			w.Surge = []int{1, 2, w.Count}[rng.IntN(3)]
		}
		if w.Ready == config.ReadyCommand {
			w.ReadyCommand = []string{"probe"}
		}
		if !w.Reloadable && rng.IntN(2) == 0 {
			w.ReloadSignal = syscall.SIGHUP
		}
		w.HealthInterval = config.DefaultHealthInterval
		if rng.IntN(3) == 0 {
			w.PromoteAfter = time.Duration(1+rng.IntN(10)) * time.Second
			switch rng.IntN(3) {
			case 0:
				w.HealthCommand = []string{"health"}
			case 1:
				w.HealthURL = "http://127.0.0.1:8080/health"
			}
		}
		cfg.Workers = append(cfg.Workers, w)
	}
	return cfg
}

func newWorld(sc *schedule, rng *rand.Rand) *world {
	m := New(sc.cfg)
	return &world{rng: rng, m: m, c: newChecker(m), now: time.Unix(0, 0), script: sc,
		procs: map[WorkerID]*simProc{}, timers: map[TimerID]time.Time{}}
}

func runSchedule(s uint64) (v *violation) {
	rng := rand.New(rand.NewPCG(s, 0x50c55111))
	sc := &schedule{cfg: randomConfig(rng)}
	w := newWorld(sc, rng)
	fail := func(msg string) *violation { return &violation{seed: s, msg: msg, schedule: sc} }
	defer func() {
		if r := recover(); r != nil {
			v = fail(fmt.Sprintf("panic: %v", r))
		}
		lastSteps = w.steps
	}()
	if msg := w.record(Boot{}); msg != "" {
		return fail(msg)
	}
	for range 10 + rng.IntN(120) {
		if msg := w.record(w.randomEvent(false)); msg != "" {
			return fail(msg)
		}
	}
	sc.events = append(sc.events, quiesced{})
	if msg := w.quiesce(); msg != "" {
		return fail(msg)
	}
	// Settle: stop, then let the world run until the machine is done.
	if msg := w.record(StopRequested{}); msg != "" {
		return fail(msg)
	}
	for i := 0; !w.m.Done(); i++ {
		if i == 5000 {
			return fail(fmt.Sprintf("stop never ends: %d workers left", len(w.m.workers)))
		}
		if ev := w.randomEvent(true); ev != nil {
			if msg := w.record(ev); msg != "" {
				return fail(msg)
			}
		}
	}
	if msg := w.c.final(); msg != "" {
		return fail(msg)
	}
	return nil
}

// quiesce lets the world only make progress (unless a stop came already):
// workers become ready, stopped ones exit, timers fire in order, nothing
// fails. Then no reload may hang and every slot must serve. Its events are
// not recorded: a replay makes them again from its own state.
func (w *world) quiesce() string {
	w.calm = true
	defer func() { w.calm = false }()
	for i := 0; !w.m.stopping; i++ {
		if i == 5000 {
			return "quiescence never reached"
		}
		ev := w.progressEvent()
		if ev == nil {
			return w.c.quiet()
		}
		if msg := w.feed(ev); msg != "" {
			return msg
		}
	}
	return ""
}

// record feeds an outside event and keeps it in the schedule.
func (w *world) record(ev Event) string {
	w.script.events = append(w.script.events, ev)
	return w.feed(ev)
}

// feed steps ev and then every outcome it causes that the executor would
// know at once, checking invariants after each step.
func (w *world) feed(ev Event) string {
	w.fed = w.fed[:0]
	w.queue = append(w.queue, ev)
	for len(w.queue) > 0 {
		ev := w.queue[0]
		w.queue = w.queue[1:]
		w.steps++
		if w.rng != nil {
			w.now = w.now.Add(time.Duration(w.rng.IntN(3)) * time.Millisecond)
		} else {
			w.now = w.now.Add(time.Millisecond)
		}
		if t, ok := ev.(TimerFired); ok {
			if at, ok := w.timers[t.Timer]; ok && at.After(w.now) {
				w.now = at
			}
			delete(w.timers, t.Timer)
		}
		msg := w.c.step(w.now, ev)
		w.fed = append(w.fed, w.c.effects...)
		if msg != "" {
			return msg
		}
		w.react(ev, w.c.effects)
	}
	return ""
}

// spawnFails decides whether a Start fails at once: at random while
// recording, as recorded while replaying.
func (w *world) spawnFails() bool {
	sc := w.script
	if w.rng == nil {
		w.spawns++
		return w.spawns <= len(sc.spawnFails) && sc.spawnFails[w.spawns-1]
	}
	f := !w.calm && w.rng.IntN(12) == 0
	sc.spawnFails = append(sc.spawnFails, f)
	return f
}

// loaded decides what LoadConfig reads, likewise.
func (w *world) loaded() ConfigLoaded {
	sc := w.script
	if w.rng == nil {
		w.loads++
		if w.loads <= len(sc.configs) {
			return sc.configs[w.loads-1]
		}
		return ConfigLoaded{Config: sc.cfg}
	}
	c := ConfigLoaded{Config: randomConfig(w.rng)}
	if !w.calm && w.rng.IntN(5) == 0 {
		c = ConfigLoaded{Err: errors.New("app.toml:3: bad")}
	}
	sc.configs = append(sc.configs, c)
	return c
}

func (w *world) react(ev Event, effects []Effect) {
	if e, ok := ev.(Exited); ok {
		delete(w.procs, e.Worker)
	}
	if e, ok := ev.(SpawnFailed); ok {
		delete(w.procs, e.Worker)
	}
	for _, e := range effects {
		switch e := e.(type) {
		case Start:
			if w.spawnFails() {
				w.queue = append(w.queue, SpawnFailed{Worker: e.Worker, Err: errors.New("EMFILE")})
			} else {
				w.procs[e.Worker] = &simProc{readyMode: e.Config.Ready, stubborn: w.rng != nil && w.rng.IntN(6) == 0}
				w.queue = append(w.queue, Spawned{Worker: e.Worker, PID: 1000 + int(e.Worker)})
			}
		case Signal:
			if p := w.procs[e.Worker]; p != nil {
				// randomConfig's stop_signal is SIGTERM; a reload_signal
				// (SIGHUP) does not ask the worker to exit.
				if e.Signal == syscall.SIGHUP {
					p.reloadSignalled = true
				} else {
					p.signalled = true
				}
			}
		case Kill:
			if p := w.procs[e.Worker]; p != nil {
				p.killed = true
			}
		case StartProbe:
			if p := w.procs[e.Worker]; p != nil {
				p.probing = true
			}
		case StartHealth:
			if p := w.procs[e.Worker]; p != nil {
				p.health, p.healthPassed = true, false
			}
		case StopProbe:
			if p := w.procs[e.Worker]; p != nil {
				p.probing, p.health = false, false
			}
		case SetTimer:
			w.timers[e.Timer] = w.now.Add(e.After)
		case CancelTimer:
			// Sometimes the timer had already fired and its event is on
			// its way: the machine must ignore it.
			if w.rng == nil || w.rng.IntN(10) != 0 {
				delete(w.timers, e.Timer)
			}
		case LoadConfig:
			w.queue = append(w.queue, w.loaded())
		case AwaitRelease:
			w.releases = append(w.releases, e.Gen)
		}
	}
}

// randomEvent picks what happens next in the world; settling, it favours
// what ends a stop and never asks for more.
func (w *world) randomEvent(settling bool) Event {
	rng := w.rng
	ids := make([]WorkerID, 0, len(w.procs))
	for id := range w.procs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	pick := func() (WorkerID, *simProc) {
		if len(ids) == 0 {
			return 0, nil
		}
		id := ids[rng.IntN(len(ids))]
		return id, w.procs[id]
	}
	for {
		switch k := rng.IntN(20); {
		case k < 4: // a process exits
			id, p := pick()
			if p == nil || settling && !p.killed && (p.stubborn || !p.signalled) {
				break
			}
			status := []string{"exit status 0", "exit status 1", "signal: killed"}[rng.IntN(3)]
			if p.reloadSignalled && rng.IntN(2) == 0 {
				status = "signal: hangup"
			}
			return Exited{Worker: id, Status: status}
		case k < 8: // READY=1, whatever the worker's ready mode
			if id, p := pick(); p != nil && !settling {
				return Notified{Worker: id, Msg: notify.Message{PID: 1000 + int(id), Fields: []notify.Field{{Key: "READY", Value: "1"}}}}
			}
		case k < 9:
			if id, p := pick(); p != nil {
				return Notified{Worker: id, Msg: notify.Message{Fields: []notify.Field{{Key: "STATUS", Value: "\x1b[2Jbusy"}}}}
			}
		case k < 10:
			id, p := pick()
			switch {
			case p != nil && p.health && rng.IntN(4) == 0:
				return HealthChecked{Worker: id, Err: errors.New("exit status 1: unhealthy")}
			case p != nil && p.health:
				return HealthChecked{Worker: id}
			case p != nil && p.probing:
				return Probed{Worker: id}
			}
		case k < 14: // time passes; a due timer fires, maybe late
			if ev := w.fireTimer(settling); ev != nil {
				return ev
			}
		case k < 16:
			if len(w.releases) > 0 {
				i := rng.IntN(len(w.releases))
				gen := w.releases[i]
				w.releases = slices.Delete(w.releases, i, i+1)
				var held []int
				if rng.IntN(4) == 0 {
					held = []int{4242}
				}
				return Released{Gen: gen, Held: held, Took: time.Millisecond}
			}
		case k < 18:
			if !settling || rng.IntN(20) == 0 {
				w.waiters++
				return ReloadRequested{Waiter: w.waiters}
			}
		default:
			if settling {
				if rng.IntN(30) == 0 {
					return StopRequested{Force: true}
				}
				break
			}
			if rng.IntN(8) == 0 {
				return StopRequested{Force: rng.IntN(3) == 0}
			}
		}
		if settling && len(w.timers) == 0 && len(w.releases) == 0 && len(w.procs) == 0 {
			return nil
		}
	}
}

// progressEvent picks the next step towards quiescence, or nil when none is
// left: a starting worker becomes ready the way its config says, a stopped
// one exits, an awaited release comes, else the earliest timer fires.
func (w *world) progressEvent() Event {
	ids := make([]WorkerID, 0, len(w.procs))
	for id := range w.procs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p, mw := w.procs[id], w.m.find(id)
		if mw == nil || mw.state != Starting {
			continue
		}
		switch {
		case p.readyMode == config.ReadyNotify:
			return Notified{Worker: id, Msg: notify.Message{PID: 1000 + int(id), Fields: []notify.Field{{Key: "READY", Value: "1"}}}}
		case p.readyMode.Probed() && p.probing:
			return Probed{Worker: id}
		}
	}
	for _, id := range ids {
		if p := w.procs[id]; p.health && !p.healthPassed {
			p.healthPassed = true
			return HealthChecked{Worker: id}
		}
	}
	for _, id := range ids {
		if p := w.procs[id]; p.signalled || p.killed {
			return Exited{Worker: id, Status: "exit status 0"}
		}
	}
	if len(w.releases) > 0 {
		gen := w.releases[0]
		w.releases = w.releases[1:]
		return Released{Gen: gen, Took: time.Millisecond}
	}
	if len(w.timers) == 0 {
		return nil
	}
	var next TimerID
	for id, at := range w.timers {
		if next == 0 || at.Before(w.timers[next]) || at.Equal(w.timers[next]) && id < next {
			next = id
		}
	}
	return TimerFired{Timer: next}
}

// fireTimer advances the clock to a pending timer and fires it; other due
// timers may wait (fire late).
func (w *world) fireTimer(settling bool) Event {
	if len(w.timers) == 0 {
		return nil
	}
	ids := make([]TimerID, 0, len(w.timers))
	for id := range w.timers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	id := ids[w.rng.IntN(len(ids))]
	if !settling && w.rng.IntN(2) == 0 {
		// Mostly the earliest: time runs forward for most timers.
		for _, other := range ids {
			if w.timers[other].Before(w.timers[id]) {
				id = other
			}
		}
	}
	return TimerFired{Timer: id}
}

// quiesced marks where a schedule checked the machine at rest; it is not an
// event of the machine.
type quiesced struct{}

func (quiesced) isEvent() {}
