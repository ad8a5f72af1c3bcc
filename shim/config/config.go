// Package config reads sockshim's TOML config, strictly: every unknown key,
// wrong type or impossible value is an error that names the file, the line
// and the key's path, so an operator can fix it without guessing.
package config

import (
	"os"
	"syscall"
	"time"
)

// Config is one sockshim config file.
type Config struct {
	Path    string   // the file it was read from
	Listen  []Listen // [[listen]]: used only when the service manager passes no sockets
	Workers []Worker // [[worker]]: at least one
	Control Control  // [control]
	Metrics Metrics  // [metrics]
}

// ListenNames returns the names of the [[listen]] entries, in order.
func (c *Config) ListenNames() []string {
	names := make([]string, 0, len(c.Listen))
	for _, l := range c.Listen {
		names = append(names, l.Name)
	}
	return names
}

// Listen is a socket sockshim binds itself when it is not socket-activated.
type Listen struct {
	Name    string // name = "http": the LISTEN_FDNAMES entry workers see
	Address string // address = "tcp://127.0.0.1:8080", as written
	Network string // derived: tcp, tcp4, tcp6, udp, udp4, udp6, unix, unixgram, unixpacket
	Addr    string // derived: host:port, or a unix path ("@name" is abstract)
	// Mode of a unix socket file: mode = "0660". Default 0660.
	Mode os.FileMode
	// Backlog of a stream socket; 0 (default) asks for the kernel maximum,
	// net.core.somaxconn, like systemd.
	Backlog int
}

// ReadyMode says how sockshim learns that a worker serves.
type ReadyMode string

// Readiness modes.
const (
	ReadyNotify  ReadyMode = "notify"  // the worker sends READY=1 (sd_notify)
	ReadyDelay   ReadyMode = "delay"   // ready_delay after start; a guess
	ReadyCommand ReadyMode = "command" // ready_command exits 0
	// ReadyAccepting: a process of the worker waits for connections on
	// every socket of its group that it holds (internal/acceptwait).
	ReadyAccepting ReadyMode = "accepting"
)

// Probed reports whether sockshim itself finds out, by watching, that a
// worker in this mode serves: a ready_command run, or the accept watch.
func (r ReadyMode) Probed() bool { return r == ReadyCommand || r == ReadyAccepting }

// Strategy says how a reload replaces a group's workers.
type Strategy string

// Reload strategies.
const (
	StrategyRolling  Strategy = "rolling"  // canary first, then surge at a time
	StrategyParallel Strategy = "parallel" // all new, then all old drain
)

// Worker is one [[worker]] entry: a group of count identical workers.
type Worker struct {
	Name         string            // name = "web"; default "worker" if only one group, else required
	Command      []string          // command = ["/usr/bin/myapp", "--serve"]; required
	Count        int               // count = 4; default 1
	Sockets      []string          // sockets = ["http"]; default (nil) all sockets
	Ready        ReadyMode         // ready = "notify" (default) | "delay" | "command" | "accepting"
	ReadyDelay   time.Duration     // ready_delay = "1s" (default), for ready = "delay"
	ReadyCommand []string          // ready_command = [...], required for ready = "command"
	ReadyTimeout time.Duration     // ready_timeout = "30s" (default)
	Strategy     Strategy          // strategy = "rolling" (default) | "parallel"
	Surge        int               // new workers starting at a time; rolling: 1 by default, 0 = stop one old first; parallel: all by default
	MaxDraining  int               // max_draining = 2 (default): draining generations kept before the oldest is killed
	StopSignal   syscall.Signal    // stop_signal = "SIGTERM" (default)
	ReloadSignal syscall.Signal    // reload_signal = "SIGHUP": sent after each successful reload; reloadable = false only; default 0, none
	DrainTimeout time.Duration     // drain_timeout = "30s" (default), then SIGKILL
	Reloadable   bool              // reloadable = true (default)
	User         string            // user = "myapp": drop privileges (sockshim must run as root)
	Group        string            // group = "myapp": default the user's primary group
	Env          map[string]string // env = { APP_ENV = "production" }
	Dir          string            // dir = "/srv/myapp": working directory
	// InterceptBind: the worker's bind(2) of an address a socket of the
	// group is bound to gets that socket instead (package intercept); the
	// worker gets no LISTEN_FDS.
	InterceptBind bool // intercept_bind = true; default false
	// Health-gated promotion: a reload's new workers serve beside the old
	// ones for PromoteAfter before they replace them (0, the default: at
	// once), and only if none exited and every health probe passed.
	PromoteAfter   time.Duration // promote_after = "30s"
	HealthCommand  []string      // health_command = [...]: exit 0 = healthy
	HealthURL      string        // health_url = "http://127.0.0.1:8080/health": 2xx = healthy
	HealthInterval time.Duration // health_interval = "1s" (default): between probes, and each probe's deadline
}

// Control is the [control] table.
type Control struct {
	// Socket is the control socket's path; empty means the default chosen
	// by control.SocketPath.
	Socket string
}

// Metrics is the [metrics] table: where the Prometheus endpoint listens.
type Metrics struct {
	// Listen as written: "127.0.0.1:9464", "[::1]:9464" or "unix:/path";
	// empty: no endpoint.
	Listen  string
	Network string      // derived: tcp or unix
	Addr    string      // derived: host:port, or the socket file's path
	Mode    os.FileMode // mode = "0660" of a unix socket file; default 0600
}

// DefaultMetricsMode keeps a unix metrics socket to sockshim's own user
// unless mode says otherwise.
const DefaultMetricsMode = os.FileMode(0o600)

// Defaults for [[worker]] keys.
const (
	DefaultCount          = 1
	DefaultReadyDelay     = time.Second
	DefaultReadyTimeout   = 30 * time.Second
	DefaultSurge          = 1
	DefaultMaxDraining    = 2
	DefaultDrainTimeout   = 30 * time.Second
	DefaultSocketMode     = os.FileMode(0o660)
	DefaultHealthInterval = time.Second
	// MaxPromoteAfter bounds promote_after: the bake holds the reload
	// open, so `systemctl reload` and every later deploy wait for it.
	MaxPromoteAfter = time.Hour
	// MinHealthInterval keeps a health probe from running in a busy loop.
	MinHealthInterval = 100 * time.Millisecond
	// MaxCount bounds count: more workers than this per group is a typo.
	MaxCount = 4096
)
