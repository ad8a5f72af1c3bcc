package core

import (
	"errors"
	"flag"
	"fmt"
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
	schedule []Event
}

func (v *violation) report() string {
	short := shrink(v.schedule, v.msg)
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %s\nreproduce: go test ./shim/core -run TestRandomSchedules -seed %d\nshortened schedule (%d of %d events):\n",
		v.seed, v.msg, v.seed, len(short), len(v.schedule))
	for _, ev := range short {
		fmt.Fprintf(&b, "\t%s\n", eventString(ev))
	}
	// The state before the breaking step and what that step did.
	c := newChecker(New(short[0].(ConfigLoaded).Config))
	now := time.Unix(0, 0)
	for i, ev := range short[1:] {
		now = now.Add(time.Millisecond)
		if i == len(short)-2 {
			fmt.Fprintf(&b, "state before the last event:\n\t%s\neffects of the last event:\n", strings.Join(c.m.dump(), "\n\t"))
		}
		func() {
			defer func() { _ = recover() }()
			c.step(now, ev)
		}()
	}
	for _, e := range c.effects {
		fmt.Fprintf(&b, "\t%s\n", e)
	}
	return b.String()
}

func eventString(ev Event) string {
	switch ev := ev.(type) {
	case ConfigLoaded:
		if ev.Err != nil {
			return "ConfigLoaded{error}"
		}
		var gs []string
		for _, w := range ev.Config.Workers {
			gs = append(gs, fmt.Sprintf("%s×%d %s surge=%d ready=%s reloadable=%v", w.Name, w.Count, w.Strategy, w.Surge, w.Ready, w.Reloadable))
		}
		return "ConfigLoaded{" + strings.Join(gs, "; ") + "}"
	case Notified:
		return fmt.Sprintf("Notified{w%d %v}", ev.Worker, ev.Msg.Fields)
	}
	return fmt.Sprintf("%T%+v", ev, ev)
}

// shrink drops events while the same invariant still breaks.
func shrink(schedule []Event, msg string) []Event {
	key, _, _ := strings.Cut(msg, ":")
	fails := func(s []Event) bool {
		v := replay(s)
		return v != nil && strings.HasPrefix(v.msg, key)
	}
	// schedule[0] is the first config; it stays.
	for chunk := len(schedule) / 2; chunk >= 1; chunk /= 2 {
		for i := 1; i+chunk <= len(schedule); {
			cand := slices.Concat(schedule[:i], schedule[i+chunk:])
			if fails(cand) {
				schedule = cand
			} else {
				i += chunk
			}
		}
	}
	return schedule
}

// replay steps a recorded schedule through a fresh machine and checker.
func replay(schedule []Event) (v *violation) {
	cfg := schedule[0].(ConfigLoaded).Config
	c := newChecker(New(cfg))
	defer func() {
		if r := recover(); r != nil {
			v = &violation{msg: fmt.Sprintf("panic: %v", r), schedule: schedule}
		}
	}()
	now := time.Unix(0, 0)
	for _, ev := range schedule[1:] {
		now = now.Add(time.Millisecond)
		if msg := c.step(now, ev); msg != "" {
			return &violation{msg: msg, schedule: schedule}
		}
	}
	return nil
}

// world plays the host: processes, timers, the config on disk.
type world struct {
	rng      *rand.Rand
	m        *Machine
	c        *checker
	now      time.Time
	schedule []Event
	queue    []Event // outcomes the executor knows at once
	procs    map[WorkerID]*simProc
	timers   map[TimerID]time.Time
	releases []int // gens awaiting Released
	waiters  WaiterID
}

type simProc struct {
	signalled, killed, probing, stubborn bool
	readyMode                            config.ReadyMode
}

func randomConfig(rng *rand.Rand) *config.Config {
	cfg := &config.Config{Path: "app.toml"}
	for _, name := range []string{"a", "b", "c"}[:1+rng.IntN(3)] {
		if rng.IntN(4) == 0 && len(cfg.Workers) > 0 {
			continue // groups come and go between configs
		}
		w := config.Worker{
			Name: name, Command: []string{name}, Count: 1 + rng.IntN(4),
			Ready:      []config.ReadyMode{config.ReadyNotify, config.ReadyNotify, config.ReadyDelay, config.ReadyCommand}[rng.IntN(4)],
			ReadyDelay: time.Duration(1+rng.IntN(3)) * time.Second, ReadyTimeout: time.Duration(5+rng.IntN(30)) * time.Second,
			Strategy:    []config.Strategy{config.StrategyRolling, config.StrategyParallel}[rng.IntN(2)],
			Surge:       rng.IntN(3),
			MaxDraining: 1 + rng.IntN(3), StopSignal: syscall.SIGTERM,
			DrainTimeout: time.Duration(1+rng.IntN(30)) * time.Second, Reloadable: rng.IntN(5) > 0,
		}
		if w.Ready == config.ReadyCommand {
			w.ReadyCommand = []string{"probe"}
		}
		cfg.Workers = append(cfg.Workers, w)
	}
	return cfg
}

func runSchedule(s uint64) (v *violation) {
	rng := rand.New(rand.NewPCG(s, 0x50c55111))
	cfg := randomConfig(rng)
	w := &world{rng: rng, m: New(cfg), now: time.Unix(0, 0), procs: map[WorkerID]*simProc{}, timers: map[TimerID]time.Time{}}
	w.c = newChecker(w.m)
	w.schedule = []Event{ConfigLoaded{Config: cfg}}
	defer func() {
		if r := recover(); r != nil {
			v = &violation{seed: s, msg: fmt.Sprintf("panic: %v", r), schedule: w.schedule}
		}
		lastSteps = len(w.schedule)
	}()
	if msg := w.feed(Boot{}); msg != "" {
		return &violation{seed: s, msg: msg, schedule: w.schedule}
	}
	steps := 10 + rng.IntN(120)
	for i := 0; i < steps; i++ {
		if msg := w.feed(w.randomEvent(false)); msg != "" {
			return &violation{seed: s, msg: msg, schedule: w.schedule}
		}
	}
	// Settle: stop, then let the world run until the machine is done.
	if msg := w.feed(StopRequested{}); msg != "" {
		return &violation{seed: s, msg: msg, schedule: w.schedule}
	}
	for i := 0; !w.m.Done(); i++ {
		if i == 5000 {
			return &violation{seed: s, msg: fmt.Sprintf("stop never ends: %d workers left", len(w.m.workers)), schedule: w.schedule}
		}
		ev := w.randomEvent(true)
		if ev == nil {
			continue
		}
		if msg := w.feed(ev); msg != "" {
			return &violation{seed: s, msg: msg, schedule: w.schedule}
		}
	}
	if msg := w.c.final(); msg != "" {
		return &violation{seed: s, msg: msg, schedule: w.schedule}
	}
	return nil
}

// feed steps ev and then every outcome it causes that the executor would
// know at once, checking invariants after each step.
func (w *world) feed(ev Event) string {
	w.queue = append(w.queue, ev)
	for len(w.queue) > 0 {
		ev := w.queue[0]
		w.queue = w.queue[1:]
		w.now = w.now.Add(time.Duration(w.rng.IntN(3)) * time.Millisecond)
		w.schedule = append(w.schedule, ev)
		if msg := w.c.step(w.now, ev); msg != "" {
			return msg
		}
		w.react(ev, w.c.effects)
	}
	return ""
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
			if w.rng.IntN(12) == 0 {
				w.queue = append(w.queue, SpawnFailed{Worker: e.Worker, Err: errors.New("EMFILE")})
			} else {
				w.procs[e.Worker] = &simProc{readyMode: e.Config.Ready, stubborn: w.rng.IntN(6) == 0}
				w.queue = append(w.queue, Spawned{Worker: e.Worker, PID: 1000 + int(e.Worker)})
			}
		case Signal:
			if p := w.procs[e.Worker]; p != nil {
				p.signalled = true
			}
		case Kill:
			if p := w.procs[e.Worker]; p != nil {
				p.killed = true
			}
		case StartProbe:
			if p := w.procs[e.Worker]; p != nil {
				p.probing = true
			}
		case StopProbe:
			if p := w.procs[e.Worker]; p != nil {
				p.probing = false
			}
		case SetTimer:
			w.timers[e.Timer] = w.now.Add(e.After)
		case CancelTimer:
			// Sometimes the timer had already fired and its event is on
			// its way: the machine must ignore it.
			if w.rng.IntN(10) != 0 {
				delete(w.timers, e.Timer)
			}
		case LoadConfig:
			if w.rng.IntN(5) == 0 {
				w.queue = append(w.queue, ConfigLoaded{Err: errors.New("app.toml:3: bad")})
			} else {
				w.queue = append(w.queue, ConfigLoaded{Config: randomConfig(w.rng)})
			}
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
			if id, p := pick(); p != nil && p.probing {
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
	if at := w.timers[id]; at.After(w.now) {
		w.now = at
	}
	delete(w.timers, id)
	return TimerFired{Timer: id}
}
