// Package metrics serves the supervisor's status in the Prometheus text
// exposition format (version 0.0.4) at GET /metrics: the counters and
// workers of control.Status, so that `sockshim status --json` and a scrape
// carry the same numbers.
//
// Nothing here keeps state of its own: each scrape asks the supervisor for
// a status snapshot (through its Run goroutine, like the control socket)
// and renders it. The format is written here rather than by a client
// library: github.com/prometheus/client_golang added 3.8 MB to the binary
// and 3 MB of RSS to every supervisor (its init registers collectors and
// protobuf descriptors whether or not [metrics] is set), which breaks the
// 15 MiB budget; github.com/VictoriaMetrics/metrics costs 0.3 MB but renders
// histograms only from observations it records itself, not from the core's
// snapshot. The output is checked against Prometheus's own parser in tests.
package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sockshim/sockshim/shim/control"
)

// Source returns a status snapshot of the supervisor.
type Source func(ctx context.Context) (control.Status, error)

// ContentType is the text exposition format's.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Write renders st in the text exposition format.
func Write(w io.Writer, st control.Status) error {
	e := &encoder{w: bufio.NewWriter(w)}
	c := st.Counters

	e.family("sockshim_reloads_total", "counter",
		"Reloads answered, by result (succeeded, failed). Requests that joined a running reload count once with it.")
	e.sample("sockshim_reloads_total", float64(c.ReloadsSucceeded), "result", "succeeded")
	e.sample("sockshim_reloads_total", float64(c.ReloadsFailed), "result", "failed")

	e.family("sockshim_reload_failures_total", "counter",
		"Failed reloads by the first cause: config, spawn, exit, ready_timeout, health, stopped.")
	for _, cause := range slices.Sorted(maps.Keys(c.FailedByCause)) {
		e.sample("sockshim_reload_failures_total", float64(c.FailedByCause[cause]), "cause", cause)
	}

	h := c.ReloadDuration
	e.family("sockshim_reload_duration_seconds", "histogram", "Time from a reload's request to its answer.")
	for _, b := range h.Buckets {
		e.sample("sockshim_reload_duration_seconds_bucket", float64(b.Count), "le", formatFloat(b.UpperBound))
	}
	e.sample("sockshim_reload_duration_seconds_bucket", float64(h.Count), "le", "+Inf")
	e.sample("sockshim_reload_duration_seconds_sum", h.Sum)
	e.sample("sockshim_reload_duration_seconds_count", float64(h.Count))

	e.family("sockshim_generation", "gauge", "The newest generation serving.")
	e.sample("sockshim_generation", float64(st.Generation))
	if !st.GenerationStarted.IsZero() {
		e.family("sockshim_generation_start_time_seconds", "gauge",
			"When the serving generation's reload began (generation 1: when sockshim started), in seconds since the epoch.")
		e.sample("sockshim_generation_start_time_seconds", seconds(st.GenerationStarted))
	}
	e.family("sockshim_start_time_seconds", "gauge", "When sockshim started, in seconds since the epoch.")
	e.sample("sockshim_start_time_seconds", seconds(st.Started))
	e.family("sockshim_reloading", "gauge", "1 while a reload runs.")
	reloading := 0.0
	if st.State == "reloading" {
		reloading = 1
	}
	e.sample("sockshim_reloading", reloading)

	type key struct{ group, gen, state string }
	workers := map[key]int{}
	var keys []key
	for _, g := range st.Groups {
		for _, w := range g.Workers {
			k := key{g.Name, strconv.Itoa(w.Generation), w.State}
			if workers[k] == 0 {
				keys = append(keys, k)
			}
			workers[k]++
		}
	}
	e.family("sockshim_workers", "gauge", "Worker processes by group, generation and state (starting, ready, draining).")
	for _, k := range keys {
		e.sample("sockshim_workers", float64(workers[k]), "group", k.group, "generation", k.gen, "state", k.state)
	}

	for _, f := range []struct {
		name, help string
		value      func(control.GroupCounters) int
	}{
		{"sockshim_worker_respawns_total", "Workers respawned after they exited, or could not start, outside a reload's rollout.",
			func(g control.GroupCounters) int { return g.Respawns }},
		{"sockshim_worker_drains_total", "Workers told to drain (sent their stop_signal).",
			func(g control.GroupCounters) int { return g.Drains }},
		{"sockshim_worker_drain_timeout_kills_total", "Draining workers killed at drain_timeout.",
			func(g control.GroupCounters) int { return g.DeadlineKills }},
	} {
		e.family(f.name, "counter", f.help)
		for _, g := range c.Groups {
			e.sample(f.name, float64(f.value(g)), "group", g.Name)
		}
	}
	e.family("sockshim_socket_shutdowns_total", "counter",
		"Held sockets found shut down (shutdown(2)) by a process that shares them, by socket and whether sockshim made it listen again (a TCP listener) or it stays shut.")
	for _, sc := range c.Sockets {
		e.sample("sockshim_socket_shutdowns_total", float64(sc.Relistened), "socket", sc.Name, "repaired", "true")
		e.sample("sockshim_socket_shutdowns_total", float64(sc.Shutdowns-sc.Relistened), "socket", sc.Name, "repaired", "false")
	}
	if e.err != nil {
		return e.err
	}
	return e.w.Flush()
}

// encoder writes lines of the text format, keeping the first error.
type encoder struct {
	w   *bufio.Writer
	err error
}

func (e *encoder) family(name, typ, help string) {
	e.printf("# HELP %s %s\n# TYPE %s %s\n", name, helpEscaper.Replace(help), name, typ)
}

// sample writes one line; labels are name, value pairs.
func (e *encoder) sample(name string, v float64, labels ...string) {
	var b strings.Builder
	b.WriteString(name)
	for i := 0; i+1 < len(labels); i += 2 {
		if i == 0 {
			b.WriteByte('{')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(labels[i])
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(labels[i+1]))
		b.WriteByte('"')
	}
	if len(labels) > 0 {
		b.WriteByte('}')
	}
	e.printf("%s %s\n", b.String(), formatFloat(v))
}

func (e *encoder) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
