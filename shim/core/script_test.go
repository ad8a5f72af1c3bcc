package core

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/notify"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt with what the machine does")

// TestScripts runs the scripts in testdata/: each is a list of commands
// (events, told in words) and, under "----", the effects the machine must
// answer with. `go test ./shim/core -rewrite` writes what it did instead,
// to be read and checked by a human before committing.
//
// Commands: config (TOML below it: the config on disk), config-error MSG,
// spawn-fail on|off, boot, ready W, status W TEXT, probed W, healthy W,
// unhealthy W ERROR, exit W
// [STATUS...], advance DURATION (fires due timers in order), reload, released
// GEN [PID...], stop [force], show. W is a worker's id as w3. Outcomes the
// executor knows at once (Spawned or SpawnFailed after Start, ConfigLoaded
// after LoadConfig) are stepped automatically, under ">>".
func TestScripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scripts in testdata/")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

type block struct {
	prefix []string // comments and blank lines before it
	cmd    string
	body   []string
	want   []string
	line   int
}

func parseScript(t *testing.T, path string) ([]block, []string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var blocks []block
	var prefix []string
	for i := 0; i < len(lines); {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			prefix = append(prefix, l)
			i++
			continue
		}
		b := block{prefix: prefix, cmd: l, line: i + 1}
		prefix = nil
		for i++; i < len(lines) && lines[i] != "----"; i++ {
			b.body = append(b.body, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: %q has no ---- line", path, b.line, b.cmd)
		}
		for i++; i < len(lines) && lines[i] != ""; i++ {
			b.want = append(b.want, lines[i])
		}
		blocks = append(blocks, b)
	}
	return blocks, prefix
}

func runScript(t *testing.T, path string) {
	blocks, tail := parseScript(t, path)
	h := &harness{now: time.Unix(1_000_000, 0).UTC(), timers: map[TimerID]time.Time{}}
	var out strings.Builder
	for _, b := range blocks {
		got := h.do(t, path, b)
		if *rewrite {
			for _, p := range b.prefix {
				out.WriteString(p + "\n")
			}
			out.WriteString(b.cmd + "\n")
			for _, l := range b.body {
				out.WriteString(l + "\n")
			}
			out.WriteString("----\n")
			for _, l := range got {
				out.WriteString(l + "\n")
			}
			continue
		}
		if !slices.Equal(got, b.want) {
			t.Errorf("%s:%d: %s\ngot:\n\t%s\nwant:\n\t%s", path, b.line, b.cmd,
				strings.Join(got, "\n\t"), strings.Join(b.want, "\n\t"))
		}
	}
	if *rewrite {
		for _, p := range tail {
			out.WriteString(p + "\n")
		}
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// harness plays the executor and the host for a script.
type harness struct {
	m          *Machine
	now        time.Time
	disk       *config.Config
	diskErr    error
	spawnFail  bool
	timers     map[TimerID]time.Time
	lastWaiter WaiterID
	out        []string
}

func (h *harness) do(t *testing.T, path string, b block) []string {
	h.out = nil
	f := strings.Fields(b.cmd)
	fail := func(format string, args ...any) {
		t.Fatalf("%s:%d: %s: %s", path, b.line, b.cmd, fmt.Sprintf(format, args...))
	}
	worker := func(i int) WorkerID {
		if len(f) <= i || !strings.HasPrefix(f[i], "w") {
			fail("want a worker like w3")
		}
		n, err := strconv.Atoi(f[i][1:])
		if err != nil {
			fail("%v", err)
		}
		return WorkerID(n)
	}
	switch f[0] {
	case "config":
		cfg, err := config.Parse("app.toml", []byte(strings.Join(b.body, "\n")))
		if err != nil {
			fail("%v", err)
		}
		h.disk, h.diskErr = cfg, nil
		if h.m == nil {
			h.m = New(cfg)
		}
	case "config-error":
		h.diskErr = errors.New(strings.TrimPrefix(b.cmd, "config-error "))
	case "spawn-fail":
		h.spawnFail = len(f) > 1 && f[1] == "on"
	case "boot":
		h.step(Boot{})
	case "ready":
		h.step(Notified{Worker: worker(1), Msg: notify.Message{Fields: []notify.Field{{Key: "READY", Value: "1"}}}})
	case "status":
		h.step(Notified{Worker: worker(1), Msg: notify.Message{Fields: []notify.Field{{Key: "STATUS", Value: strings.Join(f[2:], " ")}}}})
	case "probed":
		h.step(Probed{Worker: worker(1)})
	case "healthy":
		h.step(HealthChecked{Worker: worker(1)})
	case "unhealthy":
		h.step(HealthChecked{Worker: worker(1), Err: errors.New(strings.Join(f[2:], " "))})
	case "exit":
		status := "exit status 1"
		if len(f) > 2 {
			status = strings.Join(f[2:], " ")
		}
		h.step(Exited{Worker: worker(1), Status: status})
	case "advance":
		d, err := time.ParseDuration(f[1])
		if err != nil {
			fail("%v", err)
		}
		h.advance(d)
	case "reload":
		h.lastWaiter++
		h.step(ReloadRequested{Waiter: h.lastWaiter})
	case "released":
		gen, _ := strconv.Atoi(f[1])
		var held []int
		for _, p := range f[2:] {
			n, _ := strconv.Atoi(p)
			held = append(held, n)
		}
		h.step(Released{Gen: gen, Held: held, Took: 3 * time.Millisecond})
	case "stop":
		h.step(StopRequested{Force: len(f) > 1 && f[1] == "force"})
	case "show":
		h.out = append(h.out, h.m.dump()...)
	default:
		fail("unknown command")
	}
	return h.out
}

// step feeds ev and the outcomes the executor would know at once.
func (h *harness) step(ev Event) {
	queue := []Event{ev}
	for first := true; len(queue) > 0; first = false {
		ev := queue[0]
		queue = queue[1:]
		if !first {
			h.out = append(h.out, ">> "+describe(ev))
		}
		for _, e := range h.m.Step(h.now, ev) {
			switch e := e.(type) {
			case Start:
				if h.spawnFail {
					queue = append(queue, SpawnFailed{Worker: e.Worker, Err: errors.New("fork/exec: resource temporarily unavailable")})
				} else {
					queue = append(queue, Spawned{Worker: e.Worker, PID: 100 + int(e.Worker)})
				}
			case LoadConfig:
				queue = append(queue, ConfigLoaded{Config: h.disk, Err: h.diskErr})
			case SetTimer:
				h.timers[e.Timer] = h.now.Add(e.After)
			case CancelTimer:
				delete(h.timers, e.Timer)
				continue // moot timers are ignored anyway; this keeps scripts short
			case Log:
				if e.Level < slog.LevelWarn {
					continue
				}
			}
			h.out = append(h.out, e.String())
		}
	}
}

// advance moves the clock by d, firing the timers that fall due in order.
func (h *harness) advance(d time.Duration) {
	end := h.now.Add(d)
	for {
		var next TimerID
		for id, at := range h.timers {
			if !at.After(end) && (next == 0 || at.Before(h.timers[next]) || at.Equal(h.timers[next]) && id < next) {
				next = id
			}
		}
		if next == 0 {
			break
		}
		h.now = h.timers[next]
		delete(h.timers, next)
		h.out = append(h.out, fmt.Sprintf("(t%d fires)", next))
		h.step(TimerFired{Timer: next})
	}
	h.now = end
}

func describe(ev Event) string {
	switch ev := ev.(type) {
	case Spawned:
		return fmt.Sprintf("spawned w%d pid %d", ev.Worker, ev.PID)
	case SpawnFailed:
		return fmt.Sprintf("spawn failed w%d: %v", ev.Worker, ev.Err)
	case ConfigLoaded:
		if ev.Err != nil {
			return "config error: " + ev.Err.Error()
		}
		return "config loaded"
	}
	return fmt.Sprintf("%T", ev)
}

// dump lists the machine's state: the status line, then every group's
// slots and every live worker.
func (m *Machine) dump() []string {
	out := []string{"status: " + m.statusLine()}
	for _, g := range m.groups {
		var slots []string
		for i, sl := range g.slots {
			s := fmt.Sprintf("%d:-", i)
			if sl.cur != nil {
				s = fmt.Sprintf("%d:w%d", i, sl.cur.id)
			}
			slots = append(slots, s)
		}
		line := fmt.Sprintf("group %s gen %d slots [%s]", g.cfg.Name, g.gen, strings.Join(slots, " "))
		if g.rollout != nil {
			line += fmt.Sprintf(" rollout to gen %d", g.rollout.gen)
		}
		out = append(out, line)
	}
	for _, w := range m.workers {
		out = append(out, fmt.Sprintf("w%d %s gen %d %s %s", w.id, w, w.gen, w.state, [...]string{"in slot", "candidate", "retiring"}[w.role]))
	}
	return out
}
