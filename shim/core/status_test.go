package core

import (
	"testing"
	"time"

	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/shim/notify"
)

// A worker's STATUS= reaches root's terminal through `sockshim status`: no
// control character may pass, and the text is bounded.
func TestPrintable(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"serving 12 req/s", "serving 12 req/s"},
		{"\x1b]0;pwned\a\x1b[2J\x1b[31mfake: all good\r", `\x1b]0;pwned\x07\x1b[2J\x1b[31mfake: all good `},
		{"tab\tand\nnewline", "tab and newline"},
		{"bidi \u202e override", `bidi \u202e override`},
		{"C1 \u009b csi", `C1 \x9b csi`},
		{"bad \xff utf-8", "bad \uFFFD utf-8"},
		{"héllo wörld", "héllo wörld"},
	} {
		if got := printable(c.in, 100); got != c.want {
			t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := printable("abcdef", 3); got != "abc…" {
		t.Errorf("printable capped at 3 = %q, want %q", got, "abc…")
	}
}

// Status says, per group with a reload_signal, which signal and how many
// successful reloads sent it.
func TestStatusReloadSignal(t *testing.T) {
	cfg, err := config.Parse("app.toml", []byte(`[[worker]]
name = "gateway"
command = ["gw"]
reloadable = false
reload_signal = "SIGUSR1"
[[worker]]
name = "web"
command = ["app"]
`))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{m: New(cfg), disk: cfg, now: time.Unix(1_000_000, 0).UTC(), timers: map[TimerID]time.Time{}}
	ready := func(id WorkerID) {
		h.step(Notified{Worker: id, Msg: notify.Message{Fields: []notify.Field{{Key: "READY", Value: "1"}}}})
	}
	h.step(Boot{})
	ready(1)
	ready(2)
	group := func() control.GroupStatus { return h.m.Status(h.now).Groups[0] }
	if g := group(); g.ReloadSignal != "SIGUSR1" || g.ReloadSignalsSent != 0 || !g.LastReloadSignal.IsZero() {
		t.Fatalf("before any reload: %+v", g)
	}
	for i, w := range []WorkerID{3, 4} {
		h.now = h.now.Add(time.Minute)
		h.step(ReloadRequested{Waiter: WaiterID(i + 1)})
		ready(w)
		h.step(Released{Gen: 2 + i})
	}
	if g := group(); g.ReloadSignalsSent != 2 || !g.LastReloadSignal.Equal(h.now) {
		t.Errorf("after 2 reloads at %s: %+v", h.now, g)
	}
	if g := h.m.Status(h.now).Groups[1]; g.ReloadSignal != "" || g.ReloadSignalsSent != 0 {
		t.Errorf("web has no reload_signal: %+v", g)
	}
}
