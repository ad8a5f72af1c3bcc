package config

import (
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/handoff/trampoline"
	"github.com/sockshim/sockshim/internal/unixaddr"
	"golang.org/x/sys/unix"
)

// reader turns the generic TOML tree into a Config, collecting errors.
type reader struct {
	file  string
	lines map[string]int // key path → line, from positions
	errs  Errors
}

// errorf records a problem at key path, on the key's line (or, for a key
// that is missing, on the line of the table that lacks it).
func (r *reader) errorf(path, format string, args ...any) {
	r.errs = append(r.errs, &Error{File: r.file, Line: r.line(path), Key: path, Msg: fmt.Sprintf(format, args...)})
}

// line returns the line of path, or of the closest enclosing table that
// has one. (A quoted key containing '.' is cut inside its quotes first, which
// matches nothing.)
func (r *reader) line(path string) int {
	for p := path; ; {
		if line := r.lines[p]; line > 0 {
			return line
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			return 0
		}
		p = p[:i]
	}
}

// join appends key to path, quoting the key unless it is a bare TOML key, so
// that "a.b" = 1 and a.b = 1 have different paths.
func join(path, key string) string {
	if !bareKey(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func bareKey(k string) bool {
	for i := 0; i < len(k); i++ {
		if c := k[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return k != ""
}

var (
	topKeys     = []string{"listen", "worker", "control", "metrics"}
	listenKeys  = []string{"name", "address", "mode", "backlog"}
	workerKeys  = []string{"name", "command", "count", "sockets", "ready", "ready_delay", "ready_command", "ready_timeout", "strategy", "surge", "max_draining", "stop_signal", "reload_signal", "drain_timeout", "reloadable", "user", "group", "env", "dir", "intercept_bind", "promote_after", "health_command", "health_url", "health_interval"}
	controlKeys = []string{"socket"}
	metricsKeys = []string{"listen", "mode"}
)

// known reports keys of table that are not in allowed, with a suggestion.
func (r *reader) known(path string, table map[string]any, allowed []string) {
	for _, k := range sortedKeys(table) {
		if slices.Contains(allowed, k) {
			continue
		}
		p := join(path, k)
		if s := suggest(k, allowed); s != "" {
			r.errorf(p, "unknown key (did you mean %q?)", s)
		} else {
			r.errorf(p, "unknown key (known keys: %s)", strings.Join(allowed, ", "))
		}
	}
}

func (r *reader) config(raw map[string]any) *Config {
	cfg := &Config{}
	r.known("", raw, topKeys)
	for i, t := range r.tables(raw, "listen") {
		cfg.Listen = append(cfg.Listen, r.listen(fmt.Sprintf("listen[%d]", i), t))
	}
	workers := r.tables(raw, "worker")
	if len(workers) == 0 && len(r.errs) == 0 {
		r.errs = append(r.errs, &Error{File: r.file, Msg: "no [[worker]] group: add at least one with a command"})
	}
	for i, t := range workers {
		cfg.Workers = append(cfg.Workers, r.worker(fmt.Sprintf("worker[%d]", i), t, len(workers)))
	}
	if v, ok := raw["control"]; ok {
		t, ok := v.(map[string]any)
		if !ok {
			r.errorf("control", "want a table [control], got %s", typeName(v))
		} else {
			r.known("control", t, controlKeys)
			cfg.Control.Socket = r.str("control.socket", t, "socket", "")
			switch s := cfg.Control.Socket; {
			case s == "":
			case !strings.HasPrefix(s, "/"):
				r.errorf("control.socket", "%q is not an absolute path", s)
			case len(s) > unixaddr.MaxPath:
				r.errorf("control.socket", "%q is %d bytes; a unix socket path holds at most %d", s, len(s), unixaddr.MaxPath)
			}
		}
	}
	if v, ok := raw["metrics"]; ok {
		t, ok := v.(map[string]any)
		if !ok {
			r.errorf("metrics", "want a table [metrics], got %s", typeName(v))
		} else {
			cfg.Metrics = r.metrics(t)
		}
	}
	r.unique(cfg)
	return cfg
}

// metrics reads the [metrics] table.
func (r *reader) metrics(t map[string]any) Metrics {
	r.known("metrics", t, metricsKeys)
	m := Metrics{Listen: r.str("metrics.listen", t, "listen", ""), Mode: DefaultMetricsMode}
	if _, ok := t["listen"]; !ok {
		r.errorf("metrics.listen", `required, e.g. "127.0.0.1:9464" or "unix:/run/sockshim/metrics.sock"`)
	} else if _, isString := t["listen"].(string); isString { // else: reported by str
		if network, addr, err := parseMetricsListen(m.Listen); err != nil {
			r.errorf("metrics.listen", "%q: %v", m.Listen, err)
		} else {
			m.Network, m.Addr = network, addr
			if err := socketDir(Listen{Network: network, Addr: addr}); err != nil {
				r.errorf("metrics.listen", "%q: %v", m.Listen, err)
			}
		}
	}
	if s := r.str("metrics.mode", t, "mode", ""); s != "" {
		n, err := strconv.ParseUint(s, 8, 32)
		switch {
		case err != nil || n > 0o777:
			r.errorf("metrics.mode", "%q is not an octal file mode like \"0660\"", s)
		case m.Network != "unix" && m.Network != "":
			r.errorf("metrics.mode", "is only used with a unix socket (listen = \"unix:/path\")")
		default:
			m.Mode = os.FileMode(n)
		}
	}
	return m
}

// parseMetricsListen splits "host:port" or "unix:/path". A unix socket
// must be a file, so that its mode keeps other users out.
func parseMetricsListen(s string) (network, addr string, err error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		switch {
		case path == "":
			return "", "", fmt.Errorf("empty socket path")
		case path[0] == '@':
			return "", "", fmt.Errorf("an abstract socket has no file mode: any local user could scrape it; use a path")
		case path[0] != '/':
			return "", "", fmt.Errorf("socket path %q is not absolute", path)
		case len(path) > unixaddr.MaxPath:
			return "", "", fmt.Errorf("socket path is %d bytes; a unix socket path holds at most %d", len(path), unixaddr.MaxPath)
		}
		return "unix", path, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", "", fmt.Errorf(`want host:port, e.g. "127.0.0.1:9464", or "unix:/path": %v`, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", "", fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", "", fmt.Errorf("host %q is not an IP address or localhost", host)
		}
	}
	return "tcp", s, nil
}

// tables returns the array of tables under key ([[listen]], [[worker]]).
func (r *reader) tables(raw map[string]any, key string) []map[string]any {
	v, ok := raw[key]
	if !ok {
		return nil
	}
	switch x := v.(type) {
	case []map[string]any:
		return x
	case []any: // key = [{...}, {...}]: the same, written inline
		ts := make([]map[string]any, 0, len(x))
		for _, e := range x {
			t, ok := e.(map[string]any)
			if !ok {
				break
			}
			ts = append(ts, t)
		}
		if len(ts) == len(x) {
			return ts
		}
	}
	r.errorf(key, "want an array of tables [[%s]], got %s", key, typeName(v))
	return nil
}

func (r *reader) listen(path string, t map[string]any) Listen {
	r.known(path, t, listenKeys)
	l := Listen{
		Name:    r.str(path+".name", t, "name", ""),
		Address: r.str(path+".address", t, "address", ""),
		Mode:    DefaultSocketMode,
		Backlog: r.int(path+".backlog", t, "backlog", 0),
	}
	if l.Name == "" {
		r.errorf(path+".name", "required: the socket's name, as workers see it in LISTEN_FDNAMES")
	} else if err := handoff.CheckName(l.Name); err != nil {
		r.errorf(path+".name", "%v", err)
	}
	if l.Address == "" {
		r.errorf(path+".address", `required, e.g. "tcp://127.0.0.1:8080" or "unix:/run/myapp.sock"`)
	} else if network, addr, err := parseAddress(l.Address); err != nil {
		r.errorf(path+".address", "%q: %v", l.Address, err)
	} else {
		l.Network, l.Addr = network, addr
		if err := socketDir(l); err != nil {
			r.errorf(path+".address", "%q: %v", l.Address, err)
		}
	}
	if m := r.str(path+".mode", t, "mode", ""); m != "" {
		n, err := strconv.ParseUint(m, 8, 32)
		if err != nil || n > 0o777 {
			r.errorf(path+".mode", "%q is not an octal file mode like \"0660\"", m)
		} else {
			l.Mode = os.FileMode(n)
		}
	}
	if l.Backlog < 0 {
		r.errorf(path+".backlog", "must not be negative")
	}
	return l
}

// parseAddress splits "tcp://host:port", "udp://…", "unix:/path",
// "unix:@abstract" (also unixgram: and unixpacket:) into net's terms.
func parseAddress(a string) (network, addr string, err error) {
	scheme, rest, ok := strings.Cut(a, ":")
	if !ok {
		return "", "", fmt.Errorf("want scheme:address, e.g. tcp://127.0.0.1:8080")
	}
	switch scheme {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		hostport, ok := strings.CutPrefix(rest, "//")
		if !ok {
			return "", "", fmt.Errorf("want %s://host:port", scheme)
		}
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			return "", "", fmt.Errorf("want %s://host:port: %v", scheme, err)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return "", "", fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
		_ = host // empty host means all addresses, like systemd's ListenStream=PORT
		return scheme, hostport, nil
	case "unix", "unixgram", "unixpacket":
		path := strings.TrimPrefix(rest, "//")
		switch {
		case path == "":
			return "", "", fmt.Errorf("empty socket path")
		case path[0] == '@':
			if len(path) == 1 {
				return "", "", fmt.Errorf("empty abstract socket name")
			}
		case path[0] != '/':
			return "", "", fmt.Errorf("socket path %q is not absolute", path)
		}
		if len(path) > unixaddr.MaxPath {
			return "", "", fmt.Errorf("socket path is %d bytes; a unix socket path holds at most %d", len(path), unixaddr.MaxPath)
		}
		return scheme, path, nil
	}
	return "", "", fmt.Errorf("unknown scheme %q (want tcp, tcp4, tcp6, udp, udp4, udp6, unix, unixgram or unixpacket)", scheme)
}

// addressKey identifies the socket address a [[listen]] entry binds, so
// that two entries that would bind the same one are found: tcp, tcp4 and
// tcp6 share one port space (udp likewise), IP addresses are compared in
// canonical form (an empty host binds [::], an IPv4-mapped address binds the
// IPv4 one), socket files by their cleaned path. Abstract unix names are
// separate per socket type in the kernel. Port 0 (any free port) never
// clashes, so its key is "".
func addressKey(l Listen) string {
	switch l.Network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		host, port, _ := net.SplitHostPort(l.Addr)
		p, _ := strconv.Atoi(port)
		if p == 0 {
			return ""
		}
		if host == "" {
			host = "::"
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			host = ip.Unmap().String()
		} else {
			host = strings.ToLower(host)
		}
		return l.Network[:3] + " " + net.JoinHostPort(host, strconv.Itoa(p))
	case "unix", "unixgram", "unixpacket":
		if strings.HasPrefix(l.Addr, "@") {
			return l.Network + " " + l.Addr
		}
		return "file " + filepath.Clean(l.Addr)
	}
	return ""
}

func (r *reader) worker(path string, t map[string]any, groups int) Worker {
	r.known(path, t, workerKeys)
	g := Worker{
		Name:         r.str(path+".name", t, "name", ""),
		Command:      r.strList(path+".command", t, "command"),
		Count:        r.int(path+".count", t, "count", DefaultCount),
		Sockets:      r.strList(path+".sockets", t, "sockets"),
		Ready:        ReadyMode(r.str(path+".ready", t, "ready", string(ReadyNotify))),
		ReadyDelay:   r.duration(path+".ready_delay", t, "ready_delay", DefaultReadyDelay),
		ReadyCommand: r.strList(path+".ready_command", t, "ready_command"),
		ReadyTimeout: r.duration(path+".ready_timeout", t, "ready_timeout", DefaultReadyTimeout),
		Strategy:     Strategy(r.str(path+".strategy", t, "strategy", string(StrategyRolling))),
		Surge:        r.int(path+".surge", t, "surge", DefaultSurge),
		MaxDraining:  r.int(path+".max_draining", t, "max_draining", DefaultMaxDraining),
		StopSignal:   r.signal(path+".stop_signal", t, "stop_signal", syscall.SIGTERM),
		ReloadSignal: r.signal(path+".reload_signal", t, "reload_signal", 0),
		DrainTimeout: r.duration(path+".drain_timeout", t, "drain_timeout", DefaultDrainTimeout),
		Reloadable:   r.bool(path+".reloadable", t, "reloadable", true),
		User:         r.str(path+".user", t, "user", ""),
		Group:        r.str(path+".group", t, "group", ""),
		Env:          r.strMap(path+".env", t, "env"),
		Dir:          r.str(path+".dir", t, "dir", ""),
		// Named for the call it changes, like systemd's keys.
		InterceptBind: r.bool(path+".intercept_bind", t, "intercept_bind", false),
	}
	r.promotion(path, t, &g)
	if g.Name == "" {
		if groups > 1 {
			r.errorf(path+".name", "required when there is more than one [[worker]] group")
		}
		g.Name = "worker"
	} else if handoff.CheckName(g.Name) != nil || strings.ContainsAny(g.Name, "/ ") {
		r.errorf(path+".name", "%q may contain neither '/', ':', spaces nor control characters", g.Name)
	}
	if _, ok := t["command"]; !ok {
		r.errorf(path+".command", `required, e.g. command = ["/usr/bin/myapp", "--serve"]`)
	} else if g.Command != nil && (len(g.Command) == 0 || g.Command[0] == "") { // nil: already reported
		r.errorf(path+".command", "must name a program")
	}
	if g.Count < 1 || g.Count > MaxCount {
		r.errorf(path+".count", "%d is not between 1 and %d", g.Count, MaxCount)
	}
	switch g.Ready {
	case ReadyNotify, ReadyDelay, ReadyAccepting:
	case ReadyCommand:
		if len(g.ReadyCommand) == 0 || g.ReadyCommand[0] == "" {
			r.errorf(path+".ready_command", `required with ready = "command"`)
		}
	default:
		r.errorf(path+".ready", "%q is not one of notify, delay, command, accepting", g.Ready)
	}
	if g.Ready != ReadyCommand && g.ReadyCommand != nil {
		r.errorf(path+".ready_command", `is only used with ready = "command" (ready is %q)`, g.Ready)
	}
	if g.Ready == ReadyAccepting && g.Sockets != nil && len(g.Sockets) == 0 {
		r.errorf(path+".ready", `"accepting" needs a socket to wait on, and the group has none (sockets = [])`)
	}
	if g.Ready == ReadyDelay && g.ReadyDelay >= g.ReadyTimeout {
		r.errorf(path+".ready_delay", "%s is not shorter than ready_timeout (%s)", g.ReadyDelay, g.ReadyTimeout)
	}
	switch g.Strategy {
	case StrategyRolling, StrategyParallel:
	default:
		r.errorf(path+".strategy", "%q is not one of rolling, parallel", g.Strategy)
	}
	_, surgeSet := t["surge"]
	switch {
	case g.Surge < 0:
		r.errorf(path+".surge", "must not be negative")
	case g.Strategy == StrategyParallel && !surgeSet:
		g.Surge = g.Count // the whole generation at once
	case g.Strategy == StrategyParallel && g.Surge == 0:
		r.errorf(path+".surge", `0 (stop an old worker first) is for strategy = "rolling"; parallel starts 1 or more new workers at a time while the old generation serves`)
	}
	if g.MaxDraining < 1 {
		r.errorf(path+".max_draining", "must be at least 1")
	}
	if g.ReloadSignal != 0 {
		switch {
		case g.Reloadable:
			r.errorf(path+".reload_signal", "is only for groups with reloadable = false: a reload replaces the workers of this group instead of signalling them")
		case g.ReloadSignal == g.StopSignal:
			r.errorf(path+".reload_signal", "%s is also the stop_signal: a worker could not tell a reload from a stop", unix.SignalName(g.ReloadSignal))
		}
	}
	if g.User != "" {
		if _, _, err := lookupUser(g.User); err != nil {
			r.errorf(path+".user", "%v", err)
		}
	}
	if g.Group != "" {
		if _, err := lookupGroup(g.Group); err != nil {
			r.errorf(path+".group", "%v", err)
		}
	}
	if g.Dir != "" {
		if err := workDir(g.Dir); err != nil {
			r.errorf(path+".dir", "%v", err)
		}
	}
	if g.InterceptBind {
		if err := trampoline.InterceptAvailable(); err != nil {
			r.errorf(path+".intercept_bind", "%v", err)
		}
		if g.Sockets != nil && len(g.Sockets) == 0 {
			r.errorf(path+".intercept_bind", "the group has no sockets (sockets = []): there is nothing a bind could be given")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(g.Env)) {
		p := join(join(path, "env"), k)
		if k == "" || strings.ContainsAny(k, "=\x00") {
			r.errorf(p, "%q is not a valid variable name", k)
		} else if ReservedEnv(k) {
			r.errorf(p, "is reserved by sockshim and cannot be configured")
		}
	}
	return g
}

// promotion reads promote_after and the health_* keys of a [[worker]].
func (r *reader) promotion(path string, t map[string]any, g *Worker) {
	g.PromoteAfter = r.optDuration(path+".promote_after", t, "promote_after")
	g.HealthCommand = r.strList(path+".health_command", t, "health_command")
	g.HealthURL = r.str(path+".health_url", t, "health_url", "")
	g.HealthInterval = r.duration(path+".health_interval", t, "health_interval", DefaultHealthInterval)
	if g.PromoteAfter > MaxPromoteAfter {
		r.errorf(path+".promote_after", "%s is longer than %s: the reload, and so `systemctl reload`, waits for the whole bake", g.PromoteAfter, MaxPromoteAfter)
	}
	_, hasCommand := t["health_command"]
	_, hasURL := t["health_url"]
	_, hasInterval := t["health_interval"]
	if g.PromoteAfter == 0 {
		for _, k := range []string{"health_command", "health_url", "health_interval"} {
			if _, ok := t[k]; ok {
				r.errorf(path+"."+k, "is only used with promote_after: health probes run while a new generation bakes")
			}
		}
		return
	}
	switch {
	case hasCommand && hasURL:
		r.errorf(path+".health_url", "set health_command or health_url, not both")
	case hasCommand && g.HealthCommand != nil && (len(g.HealthCommand) == 0 || g.HealthCommand[0] == ""):
		r.errorf(path+".health_command", "must name a program")
	case hasURL:
		if err := checkHealthURL(g.HealthURL); err != nil {
			r.errorf(path+".health_url", "%q: %v", g.HealthURL, err)
		}
	}
	if hasInterval {
		switch {
		case !hasCommand && !hasURL:
			r.errorf(path+".health_interval", "is only used with health_command or health_url")
		case g.HealthInterval < MinHealthInterval:
			r.errorf(path+".health_interval", "%s is shorter than %s", g.HealthInterval, MinHealthInterval)
		}
	}
	if (hasCommand || hasURL) && g.HealthInterval > g.PromoteAfter {
		r.errorf(path+".health_interval", "%s is longer than promote_after (%s): no probe would end within the bake", g.HealthInterval, g.PromoteAfter)
	}
}

// checkHealthURL accepts an absolute http or https URL with a host.
func checkHealthURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("want an http:// or https:// URL")
	case u.Host == "":
		return fmt.Errorf("no host")
	}
	return nil
}

// optDuration is a duration whose absence, "0" or "0s" means 0 (off).
func (r *reader) optDuration(path string, t map[string]any, key string) time.Duration {
	if s, ok := t[key].(string); ok {
		if d, err := time.ParseDuration(s); err == nil && d == 0 {
			return 0
		}
	}
	return r.duration(path, t, key, 0)
}

// unique checks that names are not used twice.
func (r *reader) unique(cfg *Config) {
	seen := map[string]int{}
	for i, l := range cfg.Listen {
		if j, dup := seen[l.Name]; dup && l.Name != "" {
			r.errorf(fmt.Sprintf("listen[%d].name", i), "%q is already the name of listen[%d]", l.Name, j)
		}
		seen[l.Name] = i
	}
	seen = map[string]int{}
	for i, l := range cfg.Listen {
		key := addressKey(l)
		if key == "" {
			continue
		}
		if j, dup := seen[key]; dup {
			at := fmt.Sprintf("listen[%d].address", j)
			r.errorf(fmt.Sprintf("listen[%d].address", i), "%q is the same address as %s = %q (line %d)", l.Address, at, cfg.Listen[j].Address, r.line(at))
		} else {
			seen[key] = i
		}
	}
	seen = map[string]int{}
	for i, g := range cfg.Workers {
		if j, dup := seen[g.Name]; dup {
			r.errorf(fmt.Sprintf("worker[%d].name", i), "%q is already the name of worker[%d]", g.Name, j)
		}
		seen[g.Name] = i
	}
	if len(cfg.Listen) == 0 {
		return // sockets come from systemd; checked when they arrive
	}
	names := cfg.ListenNames()
	for i, g := range cfg.Workers {
		for _, s := range g.Sockets {
			if !slices.Contains(names, s) {
				r.errorf(fmt.Sprintf("worker[%d].sockets", i), "no [[listen]] is named %q (names: %s)", s, quoteList(names))
			}
		}
	}
}

func quoteList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// Typed getters: each returns def when the key is absent and records a
// type error when it has the wrong type. No string may contain a NUL byte:
// it cannot be part of a path, a name, an argument or an environment.

func (r *reader) str(path string, t map[string]any, key, def string) string {
	v, ok := t[key]
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		r.errorf(path, "want a string, got %s", typeName(v))
		return def
	}
	if strings.IndexByte(s, 0) >= 0 {
		r.errorf(path, "%q contains a NUL byte", s)
		return def
	}
	return s
}

func (r *reader) int(path string, t map[string]any, key string, def int) int {
	v, ok := t[key]
	if !ok {
		return def
	}
	n, ok := v.(int64)
	if !ok {
		r.errorf(path, "want an integer, got %s", typeName(v))
		return def
	}
	return int(n)
}

func (r *reader) bool(path string, t map[string]any, key string, def bool) bool {
	v, ok := t[key]
	if !ok {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		r.errorf(path, "want true or false, got %s", typeName(v))
		return def
	}
	return b
}

func (r *reader) strList(path string, t map[string]any, key string) []string {
	v, ok := t[key]
	if !ok {
		return nil
	}
	items, ok := v.([]any)
	if !ok {
		r.errorf(path, "want an array of strings, got %s", typeName(v))
		return nil
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		s, ok := it.(string)
		if !ok {
			r.errorf(path, "element %d: want a string, got %s", i, typeName(it))
			return nil
		}
		if strings.IndexByte(s, 0) >= 0 {
			r.errorf(path, "element %d: %q contains a NUL byte", i, s)
			return nil
		}
		out = append(out, s)
	}
	return out
}

func (r *reader) strMap(path string, t map[string]any, key string) map[string]string {
	v, ok := t[key]
	if !ok {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		r.errorf(path, "want a table of strings, e.g. { APP_ENV = \"production\" }, got %s", typeName(v))
		return nil
	}
	out := make(map[string]string, len(m))
	for _, k := range sortedKeys(m) {
		s, ok := m[k].(string)
		if !ok {
			r.errorf(join(path, k), "want a string, got %s", typeName(m[k]))
			continue
		}
		if strings.IndexByte(s, 0) >= 0 {
			r.errorf(join(path, k), "%q contains a NUL byte", s)
			continue
		}
		out[k] = s
	}
	return out
}

func (r *reader) duration(path string, t map[string]any, key string, def time.Duration) time.Duration {
	if s, ok := t[key].(string); ok && s == "" {
		r.errorf(path, `empty duration (want e.g. "30s", "1m30s", "500ms")`)
		return def
	}
	s := r.str(path, t, key, "")
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	switch {
	case err == nil:
	case !durationSyntax(s):
		r.errorf(path, `%q is not a duration (want e.g. "30s", "1m30s", "500ms")`, s)
		return def
	case s[0] == '-':
		r.errorf(path, "%q must be positive", s)
		return def
	default:
		r.errorf(path, "%q is too long: the longest duration is %s (about 292 years)", s, time.Duration(math.MaxInt64))
		return def
	}
	if d <= 0 {
		r.errorf(path, "%q must be positive", s)
		return def
	}
	return d
}

// durationSyntax reports whether s has the form time.ParseDuration accepts
// ([-+]0, or [-+] then numbers with units), whatever its size: when it does
// and ParseDuration still fails, the value overflowed.
func durationSyntax(s string) bool {
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	if s == "0" {
		return true
	}
	if s == "" {
		return false
	}
	isDigit := func(r rune) bool { return '0' <= r && r <= '9' }
	for s != "" {
		whole := len(s) - len(strings.TrimLeftFunc(s, isDigit))
		s = s[whole:]
		frac := 0
		if rest, ok := strings.CutPrefix(s, "."); ok {
			frac = len(rest) - len(strings.TrimLeftFunc(rest, isDigit))
			s = rest[frac:]
		}
		if whole+frac == 0 {
			return false
		}
		end := strings.IndexFunc(s, func(r rune) bool { return r == '.' || isDigit(r) })
		if end < 0 {
			end = len(s)
		}
		switch s[:end] {
		case "ns", "us", "µs", "μs", "ms", "s", "m", "h":
		default:
			return false
		}
		s = s[end:]
	}
	return true
}

func (r *reader) signal(path string, t map[string]any, key string, def syscall.Signal) syscall.Signal {
	v, ok := t[key]
	if !ok {
		return def
	}
	var sig syscall.Signal
	switch x := v.(type) {
	case string:
		name := strings.ToUpper(strings.TrimSpace(x))
		if n, err := strconv.Atoi(name); err == nil {
			sig = syscall.Signal(n)
			if unix.SignalName(sig) == "" {
				sig = 0
			}
		} else {
			if !strings.HasPrefix(name, "SIG") {
				name = "SIG" + name
			}
			sig = unix.SignalNum(name)
		}
	case int64:
		sig = syscall.Signal(x)
		if unix.SignalName(sig) == "" {
			sig = 0
		}
	default:
		r.errorf(path, `want a signal name like "SIGTERM", got %s`, typeName(v))
		return def
	}
	if sig == 0 {
		r.errorf(path, "%v is not a signal name (want e.g. \"SIGTERM\", \"SIGQUIT\", \"SIGINT\")", v)
		return def
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGSTOP {
		if key == "stop_signal" {
			r.errorf(path, "%s cannot be caught, so a worker could never drain; use drain_timeout for the kill", unix.SignalName(sig))
		} else {
			r.errorf(path, "%s cannot be caught, so a worker could never act on it", unix.SignalName(sig))
		}
		return def
	}
	return sig
}

func typeName(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("float %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case []any:
		return "array"
	case map[string]any:
		return "table"
	case []map[string]any:
		return "array of tables"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// suggest returns the allowed key closest to k if it is close enough to be
// a typo: edit distance at most 2, or a prefix match.
func suggest(k string, allowed []string) string {
	best, bestD := "", 3
	for _, a := range allowed {
		d := distance(k, a)
		if strings.HasPrefix(a, k) && len(k) >= 3 {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
