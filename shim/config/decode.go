package config

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reader turns the generic TOML tree into a Config, collecting errors.
type reader struct {
	file  string
	lines map[string]int
	errs  Errors
}

// errorf records a problem at key path, on the key's line (or, for a key
// that is missing, on the line of the table that lacks it).
func (r *reader) errorf(path, format string, args ...any) {
	line := r.lines[path]
	for p := path; line == 0 && p != ""; {
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
		line = r.lines[p]
	}
	r.errs = append(r.errs, &Error{File: r.file, Line: line, Key: path, Msg: fmt.Sprintf(format, args...)})
}

var (
	topKeys     = []string{"listen", "worker", "control"}
	listenKeys  = []string{"name", "address", "mode", "backlog"}
	workerKeys  = []string{"name", "command", "count", "sockets", "ready", "ready_delay", "ready_command", "ready_timeout", "strategy", "surge", "max_draining", "stop_signal", "drain_timeout", "reloadable", "user", "group", "env", "dir"}
	controlKeys = []string{"socket"}
)

// known reports keys of table that are not in allowed, with a suggestion.
func (r *reader) known(path string, table map[string]any, allowed []string) {
	for _, k := range sortedKeys(table) {
		if slices.Contains(allowed, k) {
			continue
		}
		p := k
		if path != "" {
			p = path + "." + k
		}
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
			if s := cfg.Control.Socket; s != "" && !strings.HasPrefix(s, "/") {
				r.errorf("control.socket", "%q is not an absolute path", s)
			}
		}
	}
	r.unique(cfg)
	return cfg
}

// tables returns the array of tables under key ([[listen]], [[worker]]).
func (r *reader) tables(raw map[string]any, key string) []map[string]any {
	v, ok := raw[key]
	if !ok {
		return nil
	}
	ts, ok := v.([]map[string]any)
	if !ok {
		r.errorf(key, "want an array of tables [[%s]], got %s", key, typeName(v))
		return nil
	}
	return ts
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
	} else if msg := badName(l.Name); msg != "" {
		r.errorf(path+".name", "%q %s", l.Name, msg)
	}
	if l.Address == "" {
		r.errorf(path+".address", `required, e.g. "tcp://127.0.0.1:8080" or "unix:/run/myapp.sock"`)
	} else if network, addr, err := parseAddress(l.Address); err != nil {
		r.errorf(path+".address", "%q: %v", l.Address, err)
	} else {
		l.Network, l.Addr = network, addr
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

// badName explains why a socket name cannot go into LISTEN_FDNAMES.
func badName(name string) string {
	if len(name) > 255 {
		return "is longer than 255 bytes"
	}
	for _, c := range name {
		if c == ':' || c < 0x20 || c == 0x7f {
			return "may not contain ':' or control characters (LISTEN_FDNAMES is colon-separated)"
		}
	}
	return ""
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
		if len(path) > 107 {
			return "", "", fmt.Errorf("socket path is %d bytes; the kernel allows 107", len(path))
		}
		return scheme, path, nil
	}
	return "", "", fmt.Errorf("unknown scheme %q (want tcp, tcp4, tcp6, udp, udp4, udp6, unix, unixgram or unixpacket)", scheme)
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
		DrainTimeout: r.duration(path+".drain_timeout", t, "drain_timeout", DefaultDrainTimeout),
		Reloadable:   r.bool(path+".reloadable", t, "reloadable", true),
		User:         r.str(path+".user", t, "user", ""),
		Group:        r.str(path+".group", t, "group", ""),
		Env:          r.strMap(path+".env", t, "env"),
		Dir:          r.str(path+".dir", t, "dir", ""),
	}
	if g.Name == "" {
		if groups > 1 {
			r.errorf(path+".name", "required when there is more than one [[worker]] group")
		}
		g.Name = "worker"
	} else if msg := badName(g.Name); msg != "" || strings.ContainsAny(g.Name, "/ ") {
		r.errorf(path+".name", "%q may contain neither '/', ':', spaces nor control characters", g.Name)
	}
	if _, ok := t["command"]; !ok {
		r.errorf(path+".command", `required, e.g. command = ["/usr/bin/myapp", "--serve"]`)
	} else if len(g.Command) == 0 || g.Command[0] == "" {
		r.errorf(path+".command", "must name a program")
	}
	if g.Count < 1 || g.Count > MaxCount {
		r.errorf(path+".count", "%d is not between 1 and %d", g.Count, MaxCount)
	}
	switch g.Ready {
	case ReadyNotify, ReadyDelay:
	case ReadyCommand:
		if len(g.ReadyCommand) == 0 || g.ReadyCommand[0] == "" {
			r.errorf(path+".ready_command", `required with ready = "command"`)
		}
	default:
		r.errorf(path+".ready", "%q is not one of notify, delay, command", g.Ready)
	}
	if g.Ready != ReadyCommand && g.ReadyCommand != nil {
		r.errorf(path+".ready_command", `is only used with ready = "command" (ready is %q)`, g.Ready)
	}
	if g.Ready == ReadyDelay && g.ReadyDelay >= g.ReadyTimeout {
		r.errorf(path+".ready_delay", "%s is not shorter than ready_timeout (%s)", g.ReadyDelay, g.ReadyTimeout)
	}
	switch g.Strategy {
	case StrategyRolling, StrategyParallel:
	default:
		r.errorf(path+".strategy", "%q is not one of rolling, parallel", g.Strategy)
	}
	if g.Surge < 0 {
		r.errorf(path+".surge", "must not be negative")
	}
	if g.MaxDraining < 1 {
		r.errorf(path+".max_draining", "must be at least 1")
	}
	if g.Dir != "" && !strings.HasPrefix(g.Dir, "/") {
		r.errorf(path+".dir", "%q is not an absolute path", g.Dir)
	}
	for k := range g.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			r.errorf(path+".env", "%q is not a valid variable name", k)
		} else if privateVar(k) {
			r.errorf(path+".env."+k, "is set by sockshim for each worker and cannot be configured")
		}
	}
	return g
}

// privateVar reports variables sockshim itself sets for workers.
func privateVar(k string) bool {
	switch k {
	case "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET":
		return true
	}
	return strings.HasPrefix(k, "SOCKSHIM_")
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
	for i, g := range cfg.Workers {
		if j, dup := seen[g.Name]; dup {
			r.errorf(fmt.Sprintf("worker[%d].name", i), "%q is already the name of worker[%d]", g.Name, j)
		}
		seen[g.Name] = i
	}
	if len(cfg.Listen) == 0 {
		return // sockets come from systemd; checked when they arrive
	}
	var names []string
	for _, l := range cfg.Listen {
		names = append(names, l.Name)
	}
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
// type error when it has the wrong type.

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
			r.errorf(path+"."+k, "want a string, got %s", typeName(m[k]))
			continue
		}
		out[k] = s
	}
	return out
}

func (r *reader) duration(path string, t map[string]any, key string, def time.Duration) time.Duration {
	s := r.str(path, t, key, "")
	if s == "" {
		if _, present := t[key]; present {
			if _, isStr := t[key].(string); isStr {
				r.errorf(path, `empty duration (want e.g. "30s", "1m30s", "500ms")`)
			}
		}
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		r.errorf(path, `%q is not a duration (want e.g. "30s", "1m30s", "500ms")`, s)
		return def
	}
	if d <= 0 {
		r.errorf(path, "%q must be positive", s)
		return def
	}
	return d
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
		r.errorf(path, "%s cannot be caught, so a worker could never drain; use drain_timeout for the kill", unix.SignalName(sig))
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
