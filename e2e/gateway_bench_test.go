package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
)

// gatewayReport runs issue 12's full comparison for BenchmarkReport:
// SOCKSHIM_BENCH_WS_CLIENTS (1,000) WebSocket clients, each sending every
// 100 ms, through SOCKSHIM_BENCH_RELOADS (100) `systemctl --user reload` in a
// row, once through the gateway example and once against the naive setup,
// and returns the "## Long-lived connections" section of BENCHMARKS.md.
func gatewayReport(b *testing.B, bb bins, m *testenv.Manager) string {
	clients := envInt("SOCKSHIM_BENCH_WS_CLIENTS", 1000)
	reloads := envInt("SOCKSHIM_BENCH_RELOADS", 100)
	g := gatewaySeries(b, m, bb, false, clients, reloads)
	n := gatewaySeries(b, m, bb, true, clients, reloads)

	var s strings.Builder
	fmt.Fprintf(&s, "## Long-lived connections\n\n")
	fmt.Fprintf(&s, "%d WebSocket clients, each sending a message every 100 ms, through %d `systemctl --user reload` in a row, "+
		"each with a new business version ([`examples/gateway`](examples/gateway), `e2e/gateway_bench_test.go`). "+
		"*gateway*: a gateway group (`reloadable = false`, `reload_signal = \"SIGHUP\"`, 1 worker) holds the WebSockets "+
		"and forwards to a reloaded business group (3 workers) over an internal unix socket. *naive*: the business "+
		"program holds the WebSockets itself in one reloadable group (3 workers, `drain_timeout = \"5s\"`); its clients "+
		"reconnect when cut. Round trips are p99 of the messages sent before the first reload (steady) and of those sent "+
		"from a reload's start to 1 s after it returned.\n\n", clients, reloads)
	s.WriteString("| architecture | clients | reloads | connections cut | messages sent | lost | duplicated | p99 round trip, steady | p99 round trip, during reloads | gateway RSS before → after |\n")
	s.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, f := range []*gatewayFigures{g, n} {
		rss := "-"
		if f.arch == "gateway" {
			rss = fmt.Sprintf("%.1f → %.1f MiB", float64(f.rssBefore)/1024, float64(f.rssAfter)/1024)
		}
		cut := fmt.Sprint(f.res.ClosedByServer)
		if f.arch == "naive" {
			cut = fmt.Sprintf("%d (%.1f per reload)", f.res.ClosedByServer, float64(f.res.ClosedByServer)/float64(reloads))
		}
		fmt.Fprintf(&s, "| %s | %d | %d | %s | %d | %d | %d | %s | %s | %s |\n", f.arch, f.clients, f.reloads, cut,
			f.res.Sent, f.res.Lost, f.res.Duplicated, f.steadyP99.Round(10*time.Microsecond), f.reloadP99.Round(10*time.Microsecond), rss)
	}
	late := 0
	for _, cs := range g.late {
		late += len(cs)
	}
	first := g.gatewayPIDs[0]
	samePID := !slices.ContainsFunc(g.gatewayPIDs, func(p int) bool { return p != first })
	fmt.Fprintf(&s, "\nGateway: %d of %d (client, reload) pairs saw the reload's new version later than %s after `systemctl reload` returned "+
		"(the latest after %s); one gateway pid throughout: %v; reload_signal received %d times (sockshim's status: sent on %d reloads); "+
		"reload p50 %s. Naive: %d reconnects failed, %d messages answered of %d sent.\n",
		late, clients*reloads, seenWithin, g.worstSeen.Round(time.Millisecond), samePID, g.reloadSignals, g.reloadSignalsByShim,
		pct(g.reloadTook, 50), n.res.ConnectErrors, n.res.Answered, n.res.Sent)
	return s.String()
}
