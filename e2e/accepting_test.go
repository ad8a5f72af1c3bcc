package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sockshim/sockshim/testenv"
)

// TestReadyAccepting: a server that binds its port early and accepts only
// later (-accept-after), with intercept_bind and ready = "accepting",
// through systemd under load. Each worker marks the moment it begins to
// serve (-accept-marks): after every reload, every worker sockshim calls
// ready has its mark, so the old generation was let go only once the new
// one waited for connections, and no request failed. The same server with
// ready = "delay" is called ready before its mark, which shows the check
// can fail; one that never accepts fails its reload with the socket named.
func TestReadyAccepting(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	marks := t.TempDir()
	// The config needs the port, which installApp picks: it is written
	// before the first connection starts sockshim.
	a := installApp(t, m, b, "accepting", "")
	body := func(version, ready, acceptAfter, readyTimeout string) string {
		args := []string{b.testworker, "-version", version, "-bind", fmt.Sprintf("127.0.0.1:%d", a.port), "-accept-after", acceptAfter, "-accept-marks", marks}
		return fmt.Sprintf("[[worker]]\nname = \"tw\"\ncommand = %s\ncount = 2\nintercept_bind = true\n%s\nready_timeout = %q\ndrain_timeout = \"10s\"\n", tomlList(args...), ready, readyTimeout)
	}
	accepting := `ready = "accepting"`
	a.rewrite(t, body("v1", accepting, "300ms", "20s"))
	if got := a.activate(t); got.version != "v1" {
		t.Fatalf("first answer %+v", got)
	}
	unmarked := func() []int {
		var out []int
		for _, pid := range workerPIDs(status(t, a.ctl), "ready") {
			if _, err := os.Stat(filepath.Join(marks, strconv.Itoa(pid))); err != nil {
				out = append(out, pid)
			}
		}
		return out
	}
	const reloads = 5
	reloadUnderLoad(t, m, a, "accepting", reloads, false,
		func(i int) { a.rewrite(t, body(fmt.Sprintf("v%d", i+1), accepting, "300ms", "20s")) },
		func(i int) {
			if pids := unmarked(); len(pids) != 0 {
				t.Errorf("reload %d: workers %v were called ready before they served", i, pids)
			}
			if got := get(t, a.url); got.version != fmt.Sprintf("v%d", i+1) {
				t.Errorf("reload %d: answered by %q", i, got.version)
			}
		})

	// A delay far shorter than the server's start: ready too early.
	a.rewrite(t, body("early", `ready = "delay"`+"\nready_delay = \"100ms\"", "3s", "20s"))
	m.MustSystemctl(t, "reload", "accepting.service")
	if pids := unmarked(); len(pids) == 0 {
		t.Errorf("with ready = \"delay\", every worker was marked serving when the reload returned: the check cannot tell early readiness")
	}

	// A server that binds and never accepts: the reload fails, the
	// running generation serves on, and the log names the socket.
	gen := status(t, a.ctl).Generation
	a.rewrite(t, body("never", accepting, "1h", "2s"))
	if out, err := m.Systemctl("reload", "accepting.service"); err == nil {
		t.Fatalf("reload of a server that never accepts succeeded:\n%s", out)
	}
	checkGeneration(t, a, gen, 2)
	log := m.Log()
	if !strings.Contains(log, "did not wait for connections on every socket it took over") || !strings.Contains(log, "not_waited_on=[http]") {
		t.Errorf("the failed readiness is not explained in the unit's log:\n%s", log)
	}
}
