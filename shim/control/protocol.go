package control

import "time"

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
	PID        int           `json:"pid"`
	Config     string        `json:"config"`
	Generation int           `json:"generation"`
	State      string        `json:"state"` // starting, serving, reloading, stopping
	Line       string        `json:"status_line"`
	Started    time.Time     `json:"started"`
	Reloads    int           `json:"reloads"`
	Groups     []GroupStatus `json:"groups"`
}

// GroupStatus describes one [[worker]] group.
type GroupStatus struct {
	Name       string         `json:"name"`
	Count      int            `json:"count"`
	Reloadable bool           `json:"reloadable"`
	Workers    []WorkerStatus `json:"workers"`
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
}
