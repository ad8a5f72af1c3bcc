package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// scraper reads a metrics endpoint on a unix socket.
type scraper struct {
	sock   string
	client *http.Client
}

func newScraper(sock string) *scraper {
	return &scraper{sock: sock, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
}

// scrape returns the families of one scrape, parsed by Prometheus's parser.
func (s *scraper) scrape() (map[string]*dto.MetricFamily, error) {
	resp, err := s.client.Get("http://sockshim/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return testenv.ParseMetrics(string(body))
}

// metric is the value of one sample; labels are name, value pairs. A
// histogram gives its count; a missing sample, -1.
func metric(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	if v, ok := testenv.MetricValue(fams, name, labels...); ok {
		return v
	}
	return -1
}

// want is what the counters must say.
type want struct {
	succeeded, failed int
	byCause           map[string]int
	respawns, drains  int
	kills             int
	generation        int
}

// check compares a scrape and `sockshim status --json` with w, exactly.
func (w want) check(t *testing.T, s *scraper, a *app) {
	t.Helper()
	fams, err := s.scrape()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	out, err := exec.Command(a.b.sockshim, "status", "-json", "-c", a.cfgPath).Output()
	if err != nil {
		t.Fatalf("sockshim status -json: %v", err)
	}
	var st control.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	c := st.Counters
	var gc control.GroupCounters
	for _, g := range c.Groups {
		if g.Name == "tw" {
			gc = g
		}
	}
	for _, x := range []struct {
		what        string
		scraped     float64
		json, wantN int
	}{
		{"reloads succeeded", metric(fams, "sockshim_reloads_total", "result", "succeeded"), c.ReloadsSucceeded, w.succeeded},
		{"reloads failed", metric(fams, "sockshim_reloads_total", "result", "failed"), c.ReloadsFailed, w.failed},
		{"reload durations", metric(fams, "sockshim_reload_duration_seconds"), c.ReloadDuration.Count, w.succeeded + w.failed},
		{"respawns", metric(fams, "sockshim_worker_respawns_total", "group", "tw"), gc.Respawns, w.respawns},
		{"drains", metric(fams, "sockshim_worker_drains_total", "group", "tw"), gc.Drains, w.drains},
		{"kills at drain_timeout", metric(fams, "sockshim_worker_drain_timeout_kills_total", "group", "tw"), gc.DeadlineKills, w.kills},
		{"generation", metric(fams, "sockshim_generation"), st.Generation, w.generation},
	} {
		if x.scraped != float64(x.wantN) || x.json != x.wantN {
			t.Errorf("%s: scraped %v, status --json %d, want %d", x.what, x.scraped, x.json, x.wantN)
		}
	}
	for _, cause := range []string{"config", "spawn", "exit", "ready_timeout", "health", "stopped"} {
		got := metric(fams, "sockshim_reload_failures_total", "cause", cause)
		if got != float64(w.byCause[cause]) || c.FailedByCause[cause] != w.byCause[cause] {
			t.Errorf("failures by %s: scraped %v, status --json %d, want %d", cause, got, c.FailedByCause[cause], w.byCause[cause])
		}
	}
	if got := metric(fams, "sockshim_workers", "group", "tw", "generation", fmt.Sprint(w.generation), "state", "ready"); got != 2 {
		t.Errorf("ready workers of generation %d: scraped %v, want 2", w.generation, got)
	}
	if metric(fams, "sockshim_generation_start_time_seconds") != float64(st.GenerationStarted.UnixNano())/1e9 {
		t.Errorf("generation start: scraped %v, status --json %s", metric(fams, "sockshim_generation_start_time_seconds"), st.GenerationStarted)
	}
}

// TestMetrics scrapes a standalone sockshim's [metrics] unix socket during
// and after reloads under load and checks every count against what the test
// did: good reloads, a canary that exits, a config that does not load, a
// worker killed by the test, workers that ignore SIGTERM past drain_timeout.
// Slow clients holding every metrics connection delay neither reloads nor
// status, and another user cannot read the socket.
func TestMetrics(t *testing.T) {
	b := build(t)
	dir := testenv.NobodyDir(t) // 0755: only the socket's own mode keeps others out
	sock := filepath.Join(dir, "metrics.sock")
	metricsTable := fmt.Sprintf("\n[metrics]\nlisten = %q\n", "unix:"+sock)
	good := func(v string, extra ...string) string {
		return workerConfig(b, v, "rolling", 1, 2, extra...) + metricsTable
	}
	a := startServing(t, b, good("v1"))
	s := newScraper(sock)
	w := want{byCause: map[string]int{}, generation: 1}
	w.check(t, s, a)

	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("metrics socket mode %v, want 0600", fi.Mode().Perm())
	}
	// The same scrape as root reads the metrics; as nobody, connect(2)
	// fails (curl: exit 7, "Couldn't connect").
	if out, err := exec.Command("curl", "-sS", "--unix-socket", sock, "http://x/metrics").CombinedOutput(); err != nil || !strings.Contains(string(out), "sockshim_reloads_total") {
		t.Fatalf("root's curl scrape: %v\n%s", err, out)
	}
	out, err := exec.Command("runuser", "-u", "nobody", "--", "curl", "-sS", "--unix-socket", sock, "http://x/metrics").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 || strings.Contains(string(out), "sockshim_") {
		t.Errorf("user nobody's scrape: %v, want curl's exit 7 (cannot connect)\n%s", err, out)
	}

	// Scrapes run all along; counters never go back.
	stop := make(chan struct{})
	var scrapes, scrapeErrs int
	var lastOK float64
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			fams, err := s.scrape()
			mu.Lock()
			scrapes++
			if err != nil {
				scrapeErrs++
				t.Errorf("scrape during reloads: %v", err)
			} else if ok := metric(fams, "sockshim_reloads_total", "result", "succeeded"); ok < lastOK {
				t.Errorf("reloads succeeded went back from %v to %v", lastOK, ok)
			} else {
				lastOK = ok
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()

	handed := 1 // generations handed out: one per reload that got past its config
	res := underLoad(t, load.Options{URL: a.url, Concurrency: 8}, func() {
		for i := range 5 {
			a.mustDeploy(t, good(fmt.Sprintf("v%d", i+2)))
			handed++
			w.succeeded++
			w.drains += 2
			w.generation = handed
		}
		// A canary that exits before it is ready.
		if out, err := a.deploy(t, good("bad", "-exit-before-ready")); err == nil {
			t.Fatalf("reload with a crashing canary succeeded:\n%s", out)
		}
		handed++
		w.failed++
		w.byCause["exit"]++
		// A config that does not load.
		if out, err := a.deploy(t, good("v9")+"\ncolour = 3\n"); err == nil {
			t.Fatalf("reload of a broken config succeeded:\n%s", out)
		}
		w.failed++
		w.byCause["config"]++
	})
	close(stop)
	wg.Wait()
	if res.Failed() != 0 {
		t.Errorf("%d failed requests: %v", res.Failed(), res.Failures)
	}
	if scrapes == 0 || scrapeErrs > 0 {
		t.Errorf("%d scrapes during reloads, %d failed", scrapes, scrapeErrs)
	}
	w.check(t, s, a)

	// A worker killed by the test is respawned.
	pid := workerPIDs(status(t, a.ctl), "ready")[0]
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the killed worker's replacement", func() bool {
		ready := workerPIDs(status(t, a.ctl), "ready")
		return len(ready) == 2 && ready[0] != pid && ready[1] != pid
	})
	w.respawns++
	w.check(t, s, a)

	// Slow clients take every metrics connection and never finish their
	// request; reloads and status go on.
	var slow []net.Conn
	for range 12 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "))
		slow = append(slow, c)
	}
	// Workers that ignore SIGTERM, drained by the next reload, are killed
	// at their drain_timeout.
	stubborn := strings.Replace(good("v10", "-ignore-sigterm"), `drain_timeout = "10s"`, `drain_timeout = "1s"`, 1)
	a.mustDeploy(t, stubborn)
	handed++
	w.succeeded++
	w.drains += 2
	stubbornPIDs := workerPIDs(status(t, a.ctl), "ready")
	a.mustDeploy(t, good("v11"))
	handed++
	w.succeeded++
	w.drains += 2
	testenv.WaitGone(t, stubbornPIDs, 10*time.Second)
	w.kills += 2
	for _, c := range slow {
		c.Close()
	}
	w.generation = handed
	w.check(t, s, a)
	text, err := exec.Command(a.b.sockshim, "status", "-c", a.cfgPath).Output()
	line := fmt.Sprintf("reloads: %d succeeded, %d failed (config 1, exit 1); workers: %d respawned, %d drained, %d killed at drain_timeout",
		w.succeeded, w.failed, w.respawns, w.drains, w.kills)
	if err != nil || !strings.Contains(string(text), line) {
		t.Errorf("sockshim status lacks %q: %v\n%s", line, err, text)
	}
	if !strings.Contains(a.sup.output(), "still running at drain_timeout") {
		t.Errorf("the kills at drain_timeout are not logged")
	}
}
