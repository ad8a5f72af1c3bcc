package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// benchPromoteAfter is the bake the promote_after section measures.
const benchPromoteAfter = 2 * time.Second

// promoteReport measures what promote_after costs a deploy: the time from
// `systemctl reload` to its return, N reloads in a row under load (16
// new-connection clients), for the same 4-worker rolling group without and
// with promote_after (and a health_command probing each baking worker).
func promoteReport(b *testing.B, bb bins, m *testenv.Manager) string {
	n := envInt("SOCKSHIM_BENCH_PROMOTE_RELOADS", 10)
	type row struct {
		name string
		took []time.Duration
		res  *load.Result
	}
	var rows []row
	for i, c := range []struct {
		name  string
		extra string // appended to the [[worker]] block
	}{
		{"rolling, 4 workers, no promote_after", ""},
		{fmt.Sprintf("rolling, 4 workers, promote_after = %q, health_command every 1s", benchPromoteAfter),
			fmt.Sprintf("promote_after = %q\nhealth_command = %s\n", benchPromoteAfter, healthCommand)},
	} {
		unit := fmt.Sprintf("bench-promote%d", i)
		cfg := func(v string) string {
			return workerConfig(bb, v, "rolling", 1, 4, "-health-dir", "FDDIR") + c.extra
		}
		a := installApp(b, m, bb, unit, cfg("v1"))
		a.activate(b)
		var took []time.Duration
		res := underLoad(b, load.Options{URL: a.url, Concurrency: 16}, func() {
			for r := 1; r <= n; r++ {
				a.rewrite(b, cfg(fmt.Sprintf("v%d", r+1)))
				start := time.Now()
				if out, err := m.Systemctl("reload", unit+".service"); err != nil {
					b.Fatalf("%s: reload %d: %v\n%s", c.name, r, err, out)
				}
				took = append(took, time.Since(start))
			}
		})
		if res.Failed() != 0 {
			b.Errorf("%s: %d failed requests: %v", c.name, res.Failed(), res.Failures)
		}
		slices.Sort(took)
		rows = append(rows, row{c.name, took, res})
		m.MustSystemctl(b, "stop", unit+".service", unit+".socket")
	}
	var s strings.Builder
	s.WriteString("## promote_after\n\n")
	fmt.Fprintf(&s, "`systemctl reload` → return, %d reloads in a row under load (16 new-connection clients), the same "+
		"testworker build each time (`e2e/promote_bench_test.go`). With promote_after, the canary serves beside the old "+
		"workers for the bake before the rollout goes on; the workers after it do not bake.\n\n", n)
	s.WriteString("| case | reloads | requests | failed | reload p50 | reload p99 | reload max |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&s, "| %s | %d | %d | %s | %s | %s | %s |\n", r.name, len(r.took), r.res.Requests, failedCell(r.res),
			pct(r.took, 50).Round(time.Millisecond), pct(r.took, 99).Round(time.Millisecond), r.took[len(r.took)-1].Round(time.Millisecond))
	}
	p50 := pct(rows[1].took, 50) - pct(rows[0].took, 50)
	fmt.Fprintf(&s, "\npromote_after = %q adds %s to the median reload: the bake, during which the old workers "+
		"serve on; the rest of the reload runs as without it.\n", benchPromoteAfter, p50.Round(time.Millisecond))
	return s.String()
}
