package e2e

import (
	"fmt"
	"testing"

	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// TestKeepAliveUnderReloads: keep-alive clients that keep sending never meet
// a connection closed under them while workers drain. POSTs, which the load
// client never retries, all succeed; GETs need no idle retry.
// (BenchmarkReport runs the POSTs for the full count of reloads.)
func TestKeepAliveUnderReloads(t *testing.T) {
	const reloads, count = 10, 3
	b := build(t)
	m := testenv.StartUserManager(t)
	for i, c := range []struct {
		name      string
		postBytes int
	}{{"GET", 0}, {"POST", 4096}} {
		t.Run(c.name, func(t *testing.T) {
			unit := fmt.Sprintf("ka%d", i)
			a := installApp(t, m, b, unit, workerConfig(b, "v1", "rolling", 1, count))
			a.activate(t)
			res := underLoad(t, load.Options{URL: a.url, Concurrency: 16, KeepAlive: true, PostBytes: c.postBytes}, func() {
				for n := 1; n <= reloads; n++ {
					a.rewrite(t, workerConfig(b, fmt.Sprintf("v%d", n+1), "rolling", 1, count))
					if out, err := m.Systemctl("reload", unit+".service"); err != nil {
						t.Fatalf("reload %d: %v\n%s", n, err, out)
					}
					checkGeneration(t, a, n+1, count)
				}
			})
			t.Logf("%d reloads, keep-alive %ss: %s", reloads, c.name, res)
			if res.Failed() != 0 || res.IdleRetries != 0 || res.OK != res.Requests {
				t.Errorf("want every request answered at the first attempt: %s %v", res, res.Examples)
			}
			final := fmt.Sprintf("v%d", reloads+1)
			if res.Versions[final] == 0 {
				t.Errorf("no answer from the final version %s under load: %v", final, res.Versions)
			}
			checkNoLeaks(t, a)
			m.MustSystemctl(t, "stop", unit+".service", unit+".socket")
		})
	}
}
