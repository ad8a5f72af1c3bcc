package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/testenv"
)

func sampleStatus() control.Status {
	started := time.Unix(1_700_000_000, 0)
	return control.Status{
		Generation: 3, State: "reloading", Started: started, GenerationStarted: started.Add(90 * time.Second),
		Groups: []control.GroupStatus{
			{Name: "web", Workers: []control.WorkerStatus{
				{Generation: 3, State: "ready"}, {Generation: 3, State: "ready"}, {Generation: 2, State: "draining"},
				{Generation: 4, State: "starting"},
			}},
			{Name: `we"ird\name`, Workers: []control.WorkerStatus{{Generation: 1, State: "ready"}}},
		},
		Counters: control.Counters{
			ReloadsSucceeded: 2, ReloadsFailed: 3,
			FailedByCause: map[string]int{"config": 1, "spawn": 0, "exit": 1, "ready_timeout": 0, "health": 0, "stopped": 1},
			ReloadDuration: control.Histogram{Count: 5, Sum: 7.25, Buckets: []control.Bucket{
				{UpperBound: 0.5, Count: 1}, {UpperBound: 1, Count: 3}, {UpperBound: 5, Count: 5}}},
			Groups:  []control.GroupCounters{{Name: "web", Respawns: 4, Drains: 6, DeadlineKills: 1}, {Name: `we"ird\name`}},
			Sockets: []control.SocketCounters{{Name: "http", Shutdowns: 3, Relistened: 2}, {Name: "admin"}},
		},
	}
}

// parse reads the exposition back with Prometheus's own parser.
func parse(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := testenv.ParseMetrics(text)
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, text)
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	v, ok := testenv.MetricValue(fams, name, labels...)
	if !ok {
		t.Fatalf("%s%v: no such sample", name, labels)
	}
	return v
}

// TestWrite: every number of the status comes out under its name, type and
// labels, and Prometheus's parser reads it back.
func TestWrite(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, sampleStatus()); err != nil {
		t.Fatal(err)
	}
	fams := parse(t, b.String())
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sockshim_reloads_total", []string{"result", "succeeded"}, 2},
		{"sockshim_reloads_total", []string{"result", "failed"}, 3},
		{"sockshim_reload_failures_total", []string{"cause", "config"}, 1},
		{"sockshim_reload_failures_total", []string{"cause", "exit"}, 1},
		{"sockshim_reload_failures_total", []string{"cause", "stopped"}, 1},
		{"sockshim_reload_failures_total", []string{"cause", "health"}, 0},
		{"sockshim_generation", nil, 3},
		{"sockshim_generation_start_time_seconds", nil, 1_700_000_090},
		{"sockshim_start_time_seconds", nil, 1_700_000_000},
		{"sockshim_reloading", nil, 1},
		{"sockshim_workers", []string{"group", "web", "generation", "3", "state", "ready"}, 2},
		{"sockshim_workers", []string{"group", "web", "generation", "2", "state", "draining"}, 1},
		{"sockshim_workers", []string{"group", "web", "generation", "4", "state", "starting"}, 1},
		{"sockshim_workers", []string{"group", `we"ird\name`, "generation", "1", "state", "ready"}, 1},
		{"sockshim_worker_respawns_total", []string{"group", "web"}, 4},
		{"sockshim_worker_drains_total", []string{"group", "web"}, 6},
		{"sockshim_worker_drain_timeout_kills_total", []string{"group", "web"}, 1},
		{"sockshim_worker_drain_timeout_kills_total", []string{"group", `we"ird\name`}, 0},
		{"sockshim_socket_shutdowns_total", []string{"socket", "http", "repaired", "true"}, 2},
		{"sockshim_socket_shutdowns_total", []string{"socket", "http", "repaired", "false"}, 1},
		{"sockshim_socket_shutdowns_total", []string{"socket", "admin", "repaired", "true"}, 0},
		{"sockshim_socket_shutdowns_total", []string{"socket", "admin", "repaired", "false"}, 0},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n := len(fams["sockshim_reload_failures_total"].GetMetric()); n != 6 {
		t.Errorf("%d cause labels, want the 6 causes", n)
	}
	h := fams["sockshim_reload_duration_seconds"]
	if h.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("reload duration is a %v", h.GetType())
	}
	hist := h.GetMetric()[0].GetHistogram()
	if hist.GetSampleCount() != 5 || hist.GetSampleSum() != 7.25 {
		t.Errorf("histogram count %d sum %v", hist.GetSampleCount(), hist.GetSampleSum())
	}
	var got []string
	for _, b := range hist.GetBucket() {
		got = append(got, model.SampleValue(b.GetUpperBound()).String()+":"+model.SampleValue(b.GetCumulativeCount()).String())
	}
	if strings.Join(got, " ") != "0.5:1 1:3 5:5 +Inf:5" {
		t.Errorf("buckets %v", got)
	}
	if !strings.Contains(b.String(), `sockshim_reload_duration_seconds_bucket{le="+Inf"} 5`) {
		t.Errorf("no +Inf bucket:\n%s", b.String())
	}
}

// TestServer: GET /metrics only; a client that never finishes its request
// holds a connection, not the supervisor; connections beyond the limit wait.
func TestServer(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.sock")
	s, err := Listen(config.Metrics{Listen: "unix:" + path, Network: "unix", Addr: path, Mode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket file: %v %v", fi.Mode(), err)
	}
	calls := make(chan struct{}, 100)
	src := func(ctx context.Context) (control.Status, error) {
		calls <- struct{}{}
		return sampleStatus(), nil
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(src, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	// Slow clients fill every connection slot but one with half a request.
	var slow []net.Conn
	for range maxConns - 1 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n"))
		slow = append(slow, c)
	}
	get := func(method, url string) (int, string) {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	code, body := get("GET", "http://sockshim/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	parse(t, body)
	for _, c := range []struct{ method, url string }{{"POST", "http://sockshim/metrics"}, {"GET", "http://sockshim/"}, {"GET", "http://sockshim/debug/pprof/"}} {
		if code, _ := get(c.method, c.url); code != http.StatusMethodNotAllowed && code != http.StatusNotFound {
			t.Errorf("%s %s: %d, want 405 or 404", c.method, c.url, code)
		}
	}
	if len(calls) != 1 {
		t.Errorf("%d status snapshots for one scrape", len(calls))
	}
	// The slow ones are cut at readHeaderTimeout.
	for _, c := range slow {
		c.SetReadDeadline(time.Now().Add(readHeaderTimeout + 5*time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("slow client not cut off: %v", err)
		}
		c.Close()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left behind: %v", err)
	}
}

// TestHandlerStatusError: no snapshot, no made-up numbers.
func TestHandlerStatusError(t *testing.T) {
	h := Handler(func(context.Context) (control.Status, error) {
		return control.Status{}, errors.New("sockshim is stopping")
	},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := &http.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
}
