package core

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/sockshim/sockshim/shim/control"
	"golang.org/x/sys/unix"
)

// maxWorkerStatus bounds a worker's STATUS= text as sockshim keeps and
// shows it.
const maxWorkerStatus = 200

// statusLine summarises the supervisor in one short line for systemctl
// status, e.g. "gen 3: web 4/4 ready; draining gen 2 (1)" or
// "gen 1: web 3/4 ready (web[1] crash loop: 5 restarts, next in 3s)".
// systemd drops notify datagrams over 4 KiB, so the line stays short.
func (m *Machine) statusLine() string {
	if m.stopping {
		return fmt.Sprintf("stopping: %d workers draining", len(m.workers))
	}
	var parts, problems []string
	drainingByGen := map[int]int{}
	for _, w := range m.workers {
		if w.state == Draining {
			drainingByGen[w.gen]++
		}
	}
	for _, g := range m.groups {
		n := 0
		for id, sl := range g.slots {
			if sl.cur != nil && sl.cur.state == Ready {
				n++
			}
			if sl.cur == nil && sl.failures > 1 {
				wait := max(sl.respawnAt.Sub(m.now).Round(100*time.Millisecond), 0)
				problems = append(problems, fmt.Sprintf("%s[%d] crash loop: %d restarts, next in %s", g.cfg.Name, id, sl.restarts, wait))
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d ready", g.cfg.Name, n, len(g.slots)))
	}
	line := fmt.Sprintf("gen %d: %s", m.servingGen(), strings.Join(parts, ", "))
	if r := m.reload; r != nil && !r.loading && r.result == nil {
		line += fmt.Sprintf("; reloading to gen %d", r.gen) + m.bakeStatus()
	}
	if len(drainingByGen) > 0 {
		var d []string
		for _, gen := range slices.Sorted(maps.Keys(drainingByGen)) {
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

// servingGen is the newest generation any group serves.
func (m *Machine) servingGen() int {
	gen := 1
	for _, g := range m.groups {
		for _, sl := range g.slots {
			if sl.cur != nil && sl.cur.gen > gen {
				gen = sl.cur.gen
			}
		}
	}
	return gen
}

// Status is a snapshot of the supervisor at now, as `sockshim status` shows
// it (PID is the executor's to fill in).
func (m *Machine) Status(now time.Time) control.Status {
	m.now = now
	st := control.Status{
		Config:     m.cfg.Path,
		Generation: m.servingGen(),
		State:      "serving",
		Line:       m.statusLine(),
		Started:    m.started,
		Reloads:    m.reloads,
	}
	st.GenerationStarted = m.genStarted[st.Generation]
	for _, g := range slices.Concat(m.groups, m.retired) {
		m.counters.group(g.cfg.Name) // every group shows, zeros included
	}
	st.Counters = m.countersStatus()
	switch {
	case m.stopping:
		st.State = "stopping"
	case m.baking():
		st.State = "baking"
	case m.reload != nil:
		st.State = "reloading"
	case !m.readySent:
		st.State = "starting"
	}
	add := func(gs *control.GroupStatus, w *worker, restarts int) {
		ws := control.WorkerStatus{ID: w.slot, PID: w.pid, Generation: w.gen, State: w.state.String(),
			Started: w.started, ReadyAt: w.readyAt, Restarts: restarts, Status: w.status}
		if !w.started.IsZero() {
			ws.Uptime = now.Sub(w.started)
		}
		gs.Workers = append(gs.Workers, ws)
	}
	for _, g := range slices.Concat(m.groups, m.retired) {
		gs := control.GroupStatus{Name: g.cfg.Name, Count: len(g.slots), Reloadable: g.cfg.Reloadable,
			ReloadSignalsSent: g.reloadSignals, LastReloadSignal: g.lastReloadSignal}
		if g.cfg.ReloadSignal != 0 {
			gs.ReloadSignal = unix.SignalName(g.cfg.ReloadSignal)
		}
		for _, sl := range g.slots {
			if sl.cur != nil {
				add(&gs, sl.cur, sl.restarts)
			}
		}
		for _, want := range []role{candidate, retiring} {
			for _, w := range m.workers {
				if w.group == g && w.role == want {
					add(&gs, w, 0)
				}
			}
		}
		st.Groups = append(st.Groups, gs)
	}
	return st
}

// printable makes text from a worker safe to show an operator: control
// characters (terminal escapes among them) become \x.. escapes or spaces,
// invalid UTF-8 is replaced, and the result is at most n runes.
func printable(s string, n int) string {
	var b strings.Builder
	runes := 0
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if runes == n {
			b.WriteString("…")
			break
		}
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			b.WriteByte(' ')
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r):
			if r <= 0xff {
				fmt.Fprintf(&b, "\\x%02x", r)
			} else {
				fmt.Fprintf(&b, "\\u%04x", r)
			}
		default:
			b.WriteRune(r)
		}
		runes++
	}
	return b.String()
}
