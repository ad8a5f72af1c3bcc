package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Request is what a client asks for.
type Request struct {
	Command string `json:"command"` // "reload" or "status"
}

// Reply is one line from the server: progress while a reload runs, then a
// final line with Done set.
type Reply struct {
	Progress string  `json:"progress,omitempty"`
	Done     bool    `json:"done,omitempty"`
	Error    string  `json:"error,omitempty"` // on the final line: why it failed
	Message  string  `json:"message,omitempty"`
	Status   *Status `json:"status,omitempty"`
}

// Status is the supervisor's state as `sockshim status` shows it.
type Status struct {
	PID        int       `json:"pid"`
	Config     string    `json:"config"`
	Generation int       `json:"generation"`
	State      string    `json:"state"` // starting, serving, reloading, baking (a reload's new workers on probation), stopping
	Line       string    `json:"status_line"`
	Started    time.Time `json:"started"`
	Reloads    int       `json:"reloads"`
	// GenerationStarted is when the serving generation's reload began (for
	// generation 1, when sockshim started).
	GenerationStarted time.Time     `json:"generation_started"`
	Groups            []GroupStatus `json:"groups"`
	// Counters are totals since sockshim started; the metrics endpoint
	// serves exactly these, and the workers above.
	Counters Counters `json:"counters"`
}

// Counters are the supervisor's totals since it started.
type Counters struct {
	// Reload runs answered: one run answers every request that joined it.
	ReloadsSucceeded int `json:"reloads_succeeded"`
	ReloadsFailed    int `json:"reloads_failed"`
	// FailedByCause splits ReloadsFailed by the first cause of each
	// failure: config, spawn, exit, ready_timeout, health, stopped (every
	// cause is present, zeros included).
	FailedByCause map[string]int `json:"reloads_failed_by_cause"`
	// ReloadDuration: from the request that began a run to its answer.
	ReloadDuration Histogram       `json:"reload_duration"`
	Groups         []GroupCounters `json:"groups"` // by name, every group sockshim has run
	// Sockets: every held socket, in LISTEN_FDNAMES order.
	Sockets []SocketCounters `json:"sockets"`
}

// SocketCounters count the shutdown(2)s of one held socket by a process
// that shares it: Relistened of them sockshim repaired (a TCP listener
// listens again); the others left it shut.
type SocketCounters struct {
	Name       string `json:"name"`
	Shutdowns  int    `json:"shutdowns"`
	Relistened int    `json:"relistened"`
}

// Histogram is a Prometheus-style histogram: Buckets are cumulative.
type Histogram struct {
	Count   int      `json:"count"`
	Sum     float64  `json:"sum_seconds"`
	Buckets []Bucket `json:"buckets"`
}

// Bucket counts the observations of at most UpperBound seconds.
type Bucket struct {
	UpperBound float64 `json:"le"`
	Count      int     `json:"count"`
}

// GroupCounters are one [[worker]] group's totals.
type GroupCounters struct {
	Name string `json:"name"`
	// Respawns: workers replaced after they exited or failed to start
	// outside a reload's rollout.
	Respawns int `json:"respawns"`
	// Drains: workers sent their stop_signal to drain.
	Drains int `json:"drains"`
	// DeadlineKills: draining workers SIGKILLed at drain_timeout.
	DeadlineKills int `json:"deadline_kills"`
}

// GroupStatus describes one [[worker]] group.
type GroupStatus struct {
	Name       string `json:"name"`
	Count      int    `json:"count"`
	Reloadable bool   `json:"reloadable"`
	// reload_signal (reloadable = false groups only): its name, the number
	// of successful reloads that sent it to the group's workers, and when
	// the last one did.
	ReloadSignal      string         `json:"reload_signal,omitempty"`
	ReloadSignalsSent int            `json:"reload_signals_sent,omitempty"`
	LastReloadSignal  time.Time      `json:"last_reload_signal,omitzero"`
	Workers           []WorkerStatus `json:"workers"`
}

// WorkerStatus describes one worker process.
type WorkerStatus struct {
	ID         int           `json:"id"`
	PID        int           `json:"pid"`
	Generation int           `json:"generation"`
	State      string        `json:"state"` // starting, ready, draining
	Started    time.Time     `json:"started"`
	ReadyAt    time.Time     `json:"ready_at,omitzero"`
	Uptime     time.Duration `json:"uptime_ns"`
	Restarts   int           `json:"restarts"`
	Status     string        `json:"status,omitempty"` // the worker's own STATUS=
	// From the worker's own cgroup, when sockshim's is delegated: CPU time
	// of all its processes (cpu.stat), and memory where the memory
	// controller is enabled (memory.current). Absent otherwise.
	CPU    *time.Duration `json:"cpu_usage_ns,omitempty"`
	Memory *int64         `json:"memory_bytes,omitempty"`
}

// maxRequest bounds a request line, newline included.
const maxRequest = 64 << 10

// maxReply bounds a reply line, newline included.
const maxReply = 16 << 20

// readRequest reads and decodes the one request line of a conversation; a
// last line without newline counts.
func readRequest(r io.Reader) (Request, error) {
	var req Request
	line, err := bufio.NewReaderSize(r, maxRequest).ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return req, fmt.Errorf("request longer than %d KiB", maxRequest>>10)
	case errors.Is(err, io.EOF) && len(line) > 0:
	case err != nil:
		return req, err
	}
	if err := json.Unmarshal(line, &req); err != nil {
		return req, fmt.Errorf("malformed request: %w", err)
	}
	return req, nil
}

// readReply reads reply lines until the final one, handing each progress
// line to progress (which may be nil). A final reply that reports failure
// is returned with its error; errNoAnswer means the server hung up without
// a final reply.
func readReply(r io.Reader, progress func(string)) (*Reply, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxReply)
	for sc.Scan() {
		var rep Reply
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			return nil, fmt.Errorf("malformed reply: %w", err)
		}
		if !rep.Done {
			if progress != nil {
				progress(rep.Progress)
			}
			continue
		}
		if rep.Error != "" {
			return &rep, errors.New(rep.Error)
		}
		return &rep, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errNoAnswer
}

var errNoAnswer = errors.New("connection closed without a final reply")
