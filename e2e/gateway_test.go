package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/wsload"
)

// The gateway example (examples/gateway) under a real systemd user manager:
// WebSocket clients through a gateway group that is never reloaded, while
// the business group behind it is reloaded again and again; and, for
// comparison, the naive setup where one reloadable group holds the clients.

// seenWithin is how soon after `systemctl reload` returns every client must
// have been answered by the new business version (issue 12). A client sends
// every 100 ms, so it leaves 900 ms for the gateway to move to the new
// generation.
const seenWithin = time.Second

// gatewayFigures is what one series measured.
type gatewayFigures struct {
	arch             string // "gateway" or "naive"
	clients, reloads int
	res              *wsload.Result
	// Round trips of the messages sent before the first reload, and of
	// those sent while a reload ran (from its start to one second after it
	// returned).
	steadyP99, reloadP99 time.Duration
	steadyN, reloadN     int
	// Clients not answered by reload i's version within seenWithin of it
	// returning, by i (gateway only; a naive client may be mid-reconnect).
	late map[int][]int
	// The longest any client waited, after a reload returned, for that
	// reload's version (gateway only).
	worstSeen time.Duration
	// The gateway's pids as status showed them after each reload, its RSS
	// (KiB) with every client connected before the first reload and after
	// the last, the reload_signals its /stats
	// counted and the reloads sockshim's status says sent it.
	gatewayPIDs         []int
	rssBefore, rssAfter int
	reloadSignals       int64
	reloadSignalsByShim int
	reloadTook          []time.Duration
}

// gatewaySeries starts the gateway example (or, naive, the business program
// holding the WebSockets itself) as a Type=notify service of m, connects
// clients that each send every 100 ms, runs reloads `systemctl --user
// reload` in a row with a new business version each, and returns what it
// measured. It fails tb only when the setup does not work; the caller
// judges the figures.
func gatewaySeries(tb testing.TB, m *testenv.Manager, bb bins, naive bool, clients, reloads int) *gatewayFigures {
	tb.Helper()
	gatewayBin := testenv.Build(tb, "github.com/sockshim/sockshim/examples/gateway/gateway")
	businessBin := testenv.Build(tb, "github.com/sockshim/sockshim/examples/gateway/business")
	arch := "gateway"
	if naive {
		arch = "naive"
	}
	a := newApp(tb, bb, "gw-"+arch)
	dir := filepath.Dir(a.cfgPath)
	versionFile := filepath.Join(dir, "VERSION")
	setVersion := func(v string) {
		tmp := versionFile + ".new"
		if err := os.WriteFile(tmp, []byte(v+"\n"), 0o644); err != nil {
			tb.Fatal(err)
		}
		if err := os.Rename(tmp, versionFile); err != nil {
			tb.Fatal(err)
		}
	}
	setVersion("v0")
	a.listen = fmt.Sprintf(`[[listen]]
name = "public"
address = "tcp://127.0.0.1:%d"

[[listen]]
name = "internal"
address = "unix:%s"
mode = "0600"
`, a.port, filepath.Join(dir, "internal.sock"))
	workers := fmt.Sprintf(`
[[worker]]
name = "gateway"
command = %s
sockets = ["public", "internal"]
reloadable = false
reload_signal = "SIGHUP"
ready_timeout = "20s"
drain_timeout = "10s"

[[worker]]
name = "business"
command = %s
sockets = ["internal"]
count = 3
ready_timeout = "20s"
drain_timeout = "15s"
`, tomlList(gatewayBin), tomlList(businessBin, "-version-file", versionFile))
	if naive {
		// Each worker holds the clients it accepted: a drain closes them
		// (1001) once their answers are written.
		workers = fmt.Sprintf(`
[[worker]]
name = "business"
command = %s
sockets = ["public"]
count = 3
ready_timeout = "20s"
drain_timeout = "5s"
`, tomlList(businessBin, "-websocket", "-version-file", versionFile))
	}
	a.rewrite(tb, workers)
	unit := a.name + ".service"
	writeService(tb, m, bb, a.name, a.cfgPath, "")
	m.MustSystemctl(tb, "start", unit)
	tb.Cleanup(func() { m.Systemctl("stop", unit) })

	f := &gatewayFigures{arch: arch, clients: clients, reloads: reloads, late: map[int][]int{}}
	gatewayPID := func() int {
		for _, g := range status(tb, a.ctl).Groups {
			if g.Name == "gateway" && len(g.Workers) == 1 {
				return g.Workers[0].PID
			}
		}
		return 0
	}
	if !naive {
		f.gatewayPIDs = append(f.gatewayPIDs, gatewayPID())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := wsload.Start(ctx, wsload.Options{URL: fmt.Sprintf("ws://127.0.0.1:%d/", a.port), Clients: clients,
		Interval: 100 * time.Millisecond, Timeout: 5 * time.Second, Reconnect: naive, ConnectParallel: 64, RecordSamples: true})
	if err != nil {
		tb.Fatalf("%s: %v", arch, err)
	}
	stopped := false
	defer func() {
		if !stopped {
			l.Stop()
		}
	}()
	// everyone waits until every client has been answered by version v, or
	// gives up after d (the figures then show who was not).
	everyone := func(v string, d time.Duration) {
		for end := time.Now().Add(d); l.Seen(v) < clients && time.Now().Before(end); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	everyone("v0", 10*time.Second)
	time.Sleep(2 * time.Second) // the steady window
	steadyEnd := time.Now()
	if !naive {
		f.rssBefore = rssKiB(f.gatewayPIDs[0]) // every client connected, none reloaded yet
	}

	type window struct{ from, to time.Time }
	var windows []window
	returned := make([]time.Time, reloads+1)
	for i := 1; i <= reloads; i++ {
		v := fmt.Sprintf("v%d", i)
		setVersion(v)
		began := time.Now()
		if out, err := m.Systemctl("reload", unit); err != nil {
			tb.Fatalf("%s: reload %d: %v\n%s\n%s", arch, i, err, out, m.Log())
		}
		returned[i] = time.Now()
		f.reloadTook = append(f.reloadTook, returned[i].Sub(began))
		windows = append(windows, window{began, returned[i].Add(seenWithin)})
		if !naive {
			f.gatewayPIDs = append(f.gatewayPIDs, gatewayPID())
		}
		// The next reload waits for this one's version to reach every
		// client, so each reload's version can be checked.
		everyone(v, 5*time.Second)
		if d := time.Until(returned[i].Add(seenWithin)); d > 0 {
			time.Sleep(d)
		}
	}
	if !naive {
		f.rssAfter = rssKiB(f.gatewayPIDs[len(f.gatewayPIDs)-1])
		f.reloadSignals = gatewayStats(tb, a.port).ReloadSignals
		for _, g := range status(tb, a.ctl).Groups {
			if g.Name == "gateway" {
				f.reloadSignalsByShim = g.ReloadSignalsSent
			}
		}
	}
	f.res = l.Stop()
	stopped = true
	for i := 1; i <= reloads && !naive; i++ {
		v := fmt.Sprintf("v%d", i)
		if late := f.res.NotSeenBy(v, returned[i].Add(seenWithin)); len(late) > 0 {
			f.late[i] = late
		}
		for _, seen := range f.res.FirstSeen {
			if at, ok := seen[v]; ok {
				f.worstSeen = max(f.worstSeen, at.Sub(returned[i]))
			}
		}
	}
	var steady, during []time.Duration
	for _, s := range f.res.Samples {
		switch {
		case s.Sent.Before(steadyEnd):
			steady = append(steady, s.RTT)
		case slices.ContainsFunc(windows, func(w window) bool { return !s.Sent.Before(w.from) && s.Sent.Before(w.to) }):
			during = append(during, s.RTT)
		}
	}
	f.steadyN, f.reloadN = len(steady), len(during)
	f.steadyP99, f.reloadP99 = p99(steady), p99(during)
	return f
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[min(len(ds)-1, len(ds)*99/100)]
}

// gatewayStats is the gateway's GET /stats.
type gatewayStatsView struct {
	PID           int   `json:"pid"`
	ReloadSignals int64 `json:"reload_signals"`
	Clients       int   `json:"clients"`
}

func gatewayStats(tb testing.TB, port int) gatewayStatsView {
	tb.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/stats", port))
	if err != nil {
		tb.Fatalf("gateway /stats: %v", err)
	}
	defer resp.Body.Close()
	var s gatewayStatsView
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		tb.Fatalf("gateway /stats: %v", err)
	}
	return s
}

// TestGatewayKeepsWebSockets is issue 12's proof, at the size
// SOCKSHIM_E2E_WS_CLIENTS × SOCKSHIM_E2E_WS_RELOADS (200 × 10 by default;
// the benchmark harness runs 1,000 × 100): through the gateway, not one
// WebSocket is closed, not one message lost or answered twice, every client
// sees each new business version within a second of the reload returning,
// the gateway keeps its pid and gets reload_signal once per reload. The
// naive setup, run the same way, cuts every client on every reload.
func TestGatewayKeepsWebSockets(t *testing.T) {
	clients := envInt("SOCKSHIM_E2E_WS_CLIENTS", 200)
	reloads := envInt("SOCKSHIM_E2E_WS_RELOADS", 10)
	b := build(t)
	m := testenv.StartUserManager(t)

	g := gatewaySeries(t, m, b, false, clients, reloads)
	t.Logf("gateway: %s; reloads took %v; rtt p99 steady %s (%d), during reloads %s (%d); new version seen by all at most %s after a reload returned; gateway RSS %d → %d KiB",
		g.res, g.reloadTook, g.steadyP99, g.steadyN, g.reloadP99, g.reloadN, g.worstSeen, g.rssBefore, g.rssAfter)
	r := g.res
	if r.Connections != clients || r.ClosedByServer != 0 || r.ConnectErrors != 0 {
		t.Errorf("gateway: %d connections (want %d), %d closed by the server %v (want 0), %d connect errors",
			r.Connections, clients, r.ClosedByServer, r.CloseReasons, r.ConnectErrors)
	}
	if r.Lost != 0 || r.Duplicated != 0 || r.Errored != 0 || r.Wrong != 0 || r.Late != 0 || r.Answered != r.Sent {
		t.Errorf("gateway: sent %d, answered %d, lost %d, duplicated %d, errored %d, wrong %d, late %d (want every message answered once); examples %v",
			r.Sent, r.Answered, r.Lost, r.Duplicated, r.Errored, r.Wrong, r.Late, r.Examples)
	}
	for i := 1; i <= reloads; i++ {
		if late := g.late[i]; len(late) > 0 {
			t.Errorf("gateway: reload %d: %d clients not answered by v%d within %s of the reload returning (first: client %d)",
				i, len(late), i, seenWithin, late[0])
		}
	}
	if first := g.gatewayPIDs[0]; first == 0 || slices.ContainsFunc(g.gatewayPIDs, func(p int) bool { return p != first }) {
		t.Errorf("gateway pids across the reloads: %v, want one pid throughout", g.gatewayPIDs)
	}
	if g.reloadSignals != int64(reloads) || g.reloadSignalsByShim != reloads {
		t.Errorf("gateway counted %d reload signals, sockshim's status says %d reloads sent it; want %d",
			g.reloadSignals, g.reloadSignalsByShim, reloads)
	}

	n := gatewaySeries(t, m, b, true, clients, reloads)
	t.Logf("naive: %s; connections cut %d (%.1f per reload), reasons %v; rtt p99 steady %s, during reloads %s",
		n.res, n.res.ClosedByServer, float64(n.res.ClosedByServer)/float64(reloads), n.res.CloseReasons, n.steadyP99, n.reloadP99)
	// Between reloads every client reconnects to, and is answered by, the
	// new generation; the next reload drains every worker of it.
	if n.res.ClosedByServer < clients*reloads {
		t.Errorf("naive: %d connections cut by %d reloads of %d clients; every reload should cut every client (≥ %d)",
			n.res.ClosedByServer, reloads, clients, clients*reloads)
	}
}
