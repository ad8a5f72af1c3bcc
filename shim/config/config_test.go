package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFullExample(t *testing.T) {
	cfg, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Path: "testdata/full.toml",
		Listen: []Listen{
			{Name: "http", Address: "tcp://127.0.0.1:8080", Network: "tcp", Addr: "127.0.0.1:8080", Mode: 0o660, Backlog: 1024},
			{Name: "admin", Address: "unix:/tmp/myapp-admin.sock", Network: "unix", Addr: "/tmp/myapp-admin.sock", Mode: 0o600},
		},
		Workers: []Worker{{
			Name: "web", Command: []string{"/usr/bin/myapp", "--serve"}, Count: 4, Sockets: []string{"http"},
			Ready: ReadyCommand, ReadyDelay: 2 * time.Second,
			ReadyCommand: []string{"/usr/bin/curl", "-fsS", "http://127.0.0.1:8080/health"},
			ReadyTimeout: 20 * time.Second, Strategy: StrategyParallel, Surge: 2, MaxDraining: 3,
			StopSignal: syscall.SIGQUIT, DrainTimeout: 45 * time.Second, Reloadable: true,
			User: "nobody", Group: "65534", Env: map[string]string{"APP_ENV": "production", "TZ": "UTC"}, Dir: "/tmp",
			InterceptBind: true, PromoteAfter: 30 * time.Second, HealthCommand: []string{"/usr/bin/curl", "-fsS", "http://127.0.0.1:8080/health"},
			HealthInterval: 2 * time.Second,
		}, {
			Name: "ws", Command: []string{"/usr/bin/myapp", "--websocket"}, Count: 1, Sockets: []string{"admin"},
			Ready: ReadyNotify, ReadyDelay: DefaultReadyDelay, ReadyTimeout: DefaultReadyTimeout, Strategy: StrategyRolling,
			Surge: DefaultSurge, MaxDraining: DefaultMaxDraining, StopSignal: syscall.SIGINT, ReloadSignal: syscall.SIGHUP,
			DrainTimeout: DefaultDrainTimeout, Reloadable: false, HealthInterval: DefaultHealthInterval,
		}},
		Control: Control{Socket: "/run/sockshim/myapp.sock"},
		Metrics: Metrics{Listen: "unix:/tmp/myapp-metrics.sock", Network: "unix", Addr: "/tmp/myapp-metrics.sock", Mode: 0o660},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("min.toml", []byte("[[worker]]\ncommand = [\"/bin/true\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Worker{Name: "worker", Command: []string{"/bin/true"}, Count: 1, Ready: ReadyNotify, ReadyDelay: time.Second,
		ReadyTimeout: 30 * time.Second, Strategy: StrategyRolling, Surge: 1, MaxDraining: 2, StopSignal: syscall.SIGTERM,
		DrainTimeout: 30 * time.Second, Reloadable: true, HealthInterval: time.Second}
	if len(cfg.Workers) != 1 || !reflect.DeepEqual(cfg.Workers[0], want) {
		t.Errorf("got %+v\nwant %+v", cfg.Workers, want)
	}
	if len(cfg.Listen) != 0 || cfg.Control.Socket != "" {
		t.Errorf("unexpected listen/control: %+v", cfg)
	}
	// parallel starts the whole generation at once unless surge says how
	// many at a time.
	for body, surge := range map[string]int{"count = 6\n": 6, "count = 6\nsurge = 2\n": 2, "count = 2\nsurge = 5\n": 5} {
		cfg, err := Parse("p.toml", []byte("[[worker]]\ncommand = [\"/bin/true\"]\nstrategy = \"parallel\"\n"+body))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Workers[0].Surge; got != surge {
			t.Errorf("parallel with %q: surge %d, want %d", body, got, surge)
		}
	}
}

// TestErrors checks that each kind of mistake gets one error naming the file,
// the line and the key.
func TestErrors(t *testing.T) {
	const w = "[[worker]]\ncommand = [\"/bin/app\"]\n"
	cases := []struct{ name, text, want string }{
		{"unknown key with suggestion", w + "cont = 4\n", `app.toml:3: worker[0].cont: unknown key (did you mean "count"?)`},
		{"unknown key without suggestion", w + "colour = 4\n", `app.toml:3: worker[0].colour: unknown key (known keys: name, command,`},
		{"unknown top-level key", "verbose = true\n" + w, `app.toml:1: verbose: unknown key`},
		{"unknown control key", w + "[control]\nsock = \"/x\"\n", `app.toml:4: control.sock: unknown key (did you mean "socket"?)`},
		{"wrong type", w + "count = \"4\"\n", `app.toml:3: worker[0].count: want an integer, got string "4"`},
		{"bad duration", w + "ready_timeout = \"30 seconds\"\n", `app.toml:3: worker[0].ready_timeout: "30 seconds" is not a duration`},
		{"zero duration", w + "drain_timeout = \"0s\"\n", `app.toml:3: worker[0].drain_timeout: "0s" must be positive`},
		{"unknown signal", w + "stop_signal = \"SIGFOO\"\n", `app.toml:3: worker[0].stop_signal: SIGFOO is not a signal name`},
		{"uncatchable signal", w + "stop_signal = \"KILL\"\n", `app.toml:3: worker[0].stop_signal: SIGKILL cannot be caught`},
		{"reload signal on a reloadable group", w + "reload_signal = \"SIGHUP\"\n", `app.toml:3: worker[0].reload_signal: is only for groups with reloadable = false`},
		{"reload signal is the stop signal", w + "reloadable = false\nstop_signal = \"HUP\"\nreload_signal = \"SIGHUP\"\n", `app.toml:5: worker[0].reload_signal: SIGHUP is also the stop_signal`},
		{"uncatchable reload signal", w + "reloadable = false\nreload_signal = \"SIGSTOP\"\n", `app.toml:4: worker[0].reload_signal: SIGSTOP cannot be caught, so a worker could never act on it`},
		{"unknown reload signal", w + "reloadable = false\nreload_signal = \"SIGRELOAD\"\n", `app.toml:4: worker[0].reload_signal: SIGRELOAD is not a signal name`},
		{"bad ready", w + "ready = \"maybe\"\n", `app.toml:3: worker[0].ready: "maybe" is not one of notify, delay, command, accepting`},
		{"accepting without sockets", w + "sockets = []\nready = \"accepting\"\n", `app.toml:4: worker[0].ready: "accepting" needs a socket to wait on, and the group has none (sockets = [])`},
		{"intercept_bind not a bool", w + "intercept_bind = \"yes\"\n", `app.toml:3: worker[0].intercept_bind: want true or false, got string "yes"`},
		{"intercept_bind without sockets", w + "sockets = []\nintercept_bind = true\n", `app.toml:4: worker[0].intercept_bind: the group has no sockets (sockets = []): there is nothing a bind could be given`},
		{"bad strategy", w + "strategy = \"yolo\"\n", `app.toml:3: worker[0].strategy: "yolo" is not one of rolling, parallel`},
		{"count zero", w + "count = 0\n", `app.toml:3: worker[0].count: 0 is not between 1 and 4096`},
		{"negative surge", w + "surge = -1\n", `app.toml:3: worker[0].surge: must not be negative`},
		{"parallel surge 0", w + "strategy = \"parallel\"\nsurge = 0\n", `app.toml:4: worker[0].surge: 0 (stop an old worker first) is for strategy = "rolling"`},
		{"missing command", "[[worker]]\nname = \"web\"\n", `app.toml:1: worker[0].command: required`},
		{"empty command", "[[worker]]\ncommand = []\n", `app.toml:2: worker[0].command: must name a program`},
		{"ready command missing", w + "ready = \"command\"\n", `app.toml:1: worker[0].ready_command: required with ready = "command"`},
		{"no worker", "[[listen]]\nname = \"http\"\naddress = \"tcp://127.0.0.1:80\"\n", `app.toml: no [[worker]] group`},
		{"duplicate worker", w + "name = \"a\"\n[[worker]]\nname = \"a\"\ncommand = [\"/x\"]\n", `app.toml:5: worker[1].name: "a" is already the name of worker[0]`},
		{"duplicate listen", "[[listen]]\nname = \"h\"\naddress = \"tcp://:1\"\n[[listen]]\nname = \"h\"\naddress = \"tcp://:2\"\n" + w, `app.toml:5: listen[1].name: "h" is already the name of listen[0]`},
		{"socket not listed", "[[listen]]\nname = \"http\"\naddress = \"tcp://:80\"\n" + w + "sockets = [\"htp\"]\n", `app.toml:6: worker[0].sockets: no [[listen]] is named "htp" (names: "http")`},
		{"bad scheme", "[[listen]]\nname = \"h\"\naddress = \"foo://x\"\n" + w, `app.toml:3: listen[0].address: "foo://x": unknown scheme "foo"`},
		{"no port", "[[listen]]\nname = \"h\"\naddress = \"tcp://nohost\"\n" + w, `app.toml:3: listen[0].address: "tcp://nohost": want tcp://host:port`},
		{"bad port", "[[listen]]\nname = \"h\"\naddress = \"tcp://:99999\"\n" + w, `app.toml:3: listen[0].address: "tcp://:99999": port "99999" is not a number from 0 to 65535`},
		{"relative unix", "[[listen]]\nname = \"h\"\naddress = \"unix:run/x.sock\"\n" + w, `app.toml:3: listen[0].address: "unix:run/x.sock": socket path "run/x.sock" is not absolute`},
		{"empty unix", "[[listen]]\nname = \"h\"\naddress = \"unix:\"\n" + w, `app.toml:3: listen[0].address: "unix:": empty socket path`},
		{"colon in name", "[[listen]]\nname = \"a:b\"\naddress = \"tcp://:1\"\n" + w, `app.toml:2: listen[0].name: socket name "a:b" contains ':'`},
		{"bad mode", "[[listen]]\nname = \"h\"\naddress = \"unix:/x\"\nmode = \"rw\"\n" + w, `app.toml:4: listen[0].mode: "rw" is not an octal file mode`},
		{"private env", w + "env = { LISTEN_FDS = \"3\" }\n", `app.toml:3: worker[0].env.LISTEN_FDS: is reserved by sockshim`},
		{"syntax", w + "count = = 3\n", `app.toml:3: TOML syntax:`},
		{"second worker line", w + "name = \"a\"\n[[worker]]\nname = \"b\"\ncommand = [\"/x\"]\ncount = \"x\"\n", `app.toml:7: worker[1].count: want an integer`},
		{"health without promote_after", w + "health_url = \"http://127.0.0.1/h\"\n", `app.toml:3: worker[0].health_url: is only used with promote_after`},
		{"health interval without promote_after", w + "health_interval = \"1s\"\n", `app.toml:3: worker[0].health_interval: is only used with promote_after`},
		{"health interval without a probe", w + "promote_after = \"5s\"\nhealth_interval = \"1s\"\n", `app.toml:4: worker[0].health_interval: is only used with health_command or health_url`},
		{"both health probes", w + "promote_after = \"5s\"\nhealth_command = [\"/bin/true\"]\nhealth_url = \"http://127.0.0.1/h\"\n", `app.toml:5: worker[0].health_url: set health_command or health_url, not both`},
		{"empty health command", w + "promote_after = \"5s\"\nhealth_command = []\n", `app.toml:4: worker[0].health_command: must name a program`},
		{"health url scheme", w + "promote_after = \"5s\"\nhealth_url = \"ftp://x/h\"\n", `app.toml:4: worker[0].health_url: "ftp://x/h": want an http:// or https:// URL`},
		{"health url host", w + "promote_after = \"5s\"\nhealth_url = \"http:///h\"\n", `app.toml:4: worker[0].health_url: "http:///h": no host`},
		{"health interval too long", w + "promote_after = \"5s\"\nhealth_url = \"http://127.0.0.1/h\"\nhealth_interval = \"6s\"\n", `app.toml:5: worker[0].health_interval: 6s is longer than promote_after (5s)`},
		{"health interval too short", w + "promote_after = \"5s\"\nhealth_url = \"http://127.0.0.1/h\"\nhealth_interval = \"1ms\"\n", `app.toml:5: worker[0].health_interval: 1ms is shorter than 100ms`},
		{"promote_after too long", w + "promote_after = \"2h\"\n", `app.toml:3: worker[0].promote_after: 2h0m0s is longer than 1h0m0s`},
		{"negative promote_after", w + "promote_after = \"-1s\"\n", `app.toml:3: worker[0].promote_after: "-1s" must be positive`},
		{"metrics without listen", w + "[metrics]\nmode = \"0600\"\n", `app.toml:3: metrics.listen: required`},
		{"metrics unknown key", w + "[metrics]\nlisten = \"127.0.0.1:9464\"\nmdoe = \"0600\"\n", `app.toml:5: metrics.mdoe: unknown key (did you mean "mode"?)`},
		{"metrics not a table", "metrics = \"127.0.0.1:9464\"\n" + w, `app.toml:1: metrics: want a table [metrics], got string`},
		{"metrics no port", w + "[metrics]\nlisten = \"127.0.0.1\"\n", `app.toml:4: metrics.listen: "127.0.0.1": want host:port`},
		{"metrics bad port", w + "[metrics]\nlisten = \"127.0.0.1:http\"\n", `app.toml:4: metrics.listen: "127.0.0.1:http": port "http" is not a number`},
		{"metrics host name", w + "[metrics]\nlisten = \"example.com:9464\"\n", `app.toml:4: metrics.listen: "example.com:9464": host "example.com" is not an IP address or localhost`},
		{"metrics relative unix", w + "[metrics]\nlisten = \"unix:m.sock\"\n", `app.toml:4: metrics.listen: "unix:m.sock": socket path "m.sock" is not absolute`},
		{"metrics abstract unix", w + "[metrics]\nlisten = \"unix:@m\"\n", `app.toml:4: metrics.listen: "unix:@m": an abstract socket has no file mode`},
		{"metrics unix dir missing", w + "[metrics]\nlisten = \"unix:/nonexistent/m.sock\"\n", `app.toml:4: metrics.listen: "unix:/nonexistent/m.sock": directory /nonexistent does not exist`},
		{"metrics mode on tcp", w + "[metrics]\nlisten = \"127.0.0.1:9464\"\nmode = \"0660\"\n", `app.toml:5: metrics.mode: is only used with a unix socket`},
		{"metrics bad mode", w + "[metrics]\nlisten = \"unix:/tmp/m.sock\"\nmode = \"777x\"\n", `app.toml:5: metrics.mode: "777x" is not an octal file mode`},
		{"metrics listen type", w + "[metrics]\nlisten = 9464\n", `app.toml:4: metrics.listen: want a string, got integer 9464`},
		{"multi-line array skipped", "[[worker]]\ncommand = [\n  \"/bin/app\",\n  \"-x\",\n]\ncoutn = 2\n", `app.toml:6: worker[0].coutn: unknown key (did you mean "count"?)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("app.toml", []byte(c.text))
			if err == nil {
				t.Fatalf("no error for:\n%s", c.text)
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("error:\n  %s\nwant prefix:\n  %s", err, c.want)
			}
		})
	}
}

// TestPromoteAfterZero: promote_after = "0s" is today's behaviour, as if
// it were absent.
func TestPromoteAfterZero(t *testing.T) {
	cfg, err := Parse("app.toml", []byte("[[worker]]\ncommand = [\"/bin/app\"]\npromote_after = \"0s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Workers[0].PromoteAfter; got != 0 {
		t.Errorf("promote_after = %s, want 0", got)
	}
}

func TestManyErrorsSortedByLine(t *testing.T) {
	_, err := Parse("app.toml", []byte("[[worker]]\ncommand = [\"/x\"]\ncount = 0\nsurge = -2\nready = \"x\"\n"))
	es := AsErrors(err)
	if len(es) != 3 {
		t.Fatalf("want 3 errors, got %v", err)
	}
	for i, line := range []int{3, 4, 5} {
		if es[i].Line != line {
			t.Errorf("error %d on line %d, want %d: %v", i, es[i].Line, line, es[i])
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v does not name %s", err, path)
	}
}

func TestCheckSocketNames(t *testing.T) {
	cfg, err := Parse("app.toml", []byte("[[worker]]\ncommand = [\"/x\"]\nsockets = [\"http\", \"admin\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckSocketNames([]string{"http", "admin"}); err != nil {
		t.Errorf("unexpected: %v", err)
	}
	err = cfg.CheckSocketNames([]string{"http"})
	want := `app.toml: worker[0].sockets: socket "admin" does not exist (sockets held: "http")`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestExampleConfigsParse(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.toml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%v", err)
		}
	}
	if _, err := os.Stat("testdata/full.toml"); err != nil {
		t.Error(err)
	}
}

// A config that fails its checks still names its control socket, so that
// `sockshim reload` reaches the supervisor, which reports the problem; a
// file that is not TOML is an error with its line.
func TestControlSocketLenient(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.toml")
	for _, c := range []struct{ text, want, err string }{
		{"[[worker]]\ncont = 3\n[control]\nsocket = \"/run/x.sock\"\n", "/run/x.sock", ""},
		{"[[worker]]\ncommand = [\"/x\"]\n", "", ""},
		{"[control]\nsocket = 3\n", "", ""},
		{"control = 3\n", "", ""},
		{"[[worker]]\ncount = = 2\n[control]\nsocket = \"/run/x.sock\"\n", "", path + ":2: TOML syntax: "},
	} {
		if err := os.WriteFile(path, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ControlSocket(path)
		if got != c.want || c.err == "" && err != nil || c.err != "" && (err == nil || !strings.HasPrefix(err.Error(), c.err)) {
			t.Errorf("ControlSocket(%q) = %q, %v; want %q, error %q", c.text, got, err, c.want, c.err)
		}
	}
	if got, err := ControlSocket(filepath.Join(dir, "missing.toml")); got != "" || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ControlSocket of a missing file = %q, %v", got, err)
	}
}

// TestMetrics: [metrics] is optional; listen takes host:port or a unix
// socket path, whose file gets mode 0600 unless mode says otherwise.
func TestMetrics(t *testing.T) {
	const w = "[[worker]]\ncommand = [\"/bin/app\"]\n"
	for _, c := range []struct {
		text string
		want Metrics
	}{
		{w, Metrics{}},
		{w + "[metrics]\nlisten = \"127.0.0.1:9464\"\n", Metrics{Listen: "127.0.0.1:9464", Network: "tcp", Addr: "127.0.0.1:9464", Mode: 0o600}},
		{w + "[metrics]\nlisten = \"[::1]:0\"\n", Metrics{Listen: "[::1]:0", Network: "tcp", Addr: "[::1]:0", Mode: 0o600}},
		{w + "[metrics]\nlisten = \"unix:/tmp/m.sock\"\n", Metrics{Listen: "unix:/tmp/m.sock", Network: "unix", Addr: "/tmp/m.sock", Mode: 0o600}},
		{w + "[metrics]\nlisten = \"unix:/tmp/m.sock\"\nmode = \"0660\"\n", Metrics{Listen: "unix:/tmp/m.sock", Network: "unix", Addr: "/tmp/m.sock", Mode: 0o660}},
	} {
		cfg, err := Parse("app.toml", []byte(c.text))
		if err != nil {
			t.Fatalf("%s: %v", c.text, err)
		}
		if cfg.Metrics != c.want {
			t.Errorf("%s: got %+v, want %+v", c.text, cfg.Metrics, c.want)
		}
	}
}
