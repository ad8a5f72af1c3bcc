package config

import (
	"strings"
	"testing"
)

// TestKeyLines checks that errors name the line of the key at fault in every
// form TOML can write a key in.
func TestKeyLines(t *testing.T) {
	cases := []struct{ name, text, want string }{
		{"dotted key in [[worker]]", `
[[worker]]
command = ["/x"]
env.APP = "x"
env.LISTEN_FDS = "3"
`, `app.toml:5: worker[0].env.LISTEN_FDS: is reserved`},
		{"dotted table path in [[worker]]", `
[[worker]]
command = ["/x"]
worker.env.X = "1"
`, `app.toml:4: worker[0].worker: unknown key`},
		{"inline table", `
[[worker]]
command = ["/x"]
env = { A = "1", B = 2 }
`, `app.toml:4: worker[0].env.B: want a string, got integer 2`},
		{"array of inline tables", `
worker = [
  { command = ["/x"], name = "a" },
  { command = ["/y"], name = "b",
    cont = 1 },
]
`, `app.toml:5: worker[1].cont: unknown key`},
		{"second [[worker]]", `
[[worker]]
name = "a"
command = ["/x"]

[[worker]]
name = "b"
command = ["/y"]
count = "two"
`, `app.toml:9: worker[1].count: want an integer`},
		{"third [[worker]]", `
[[worker]]
name = "a"
command = ["/x"]
[[worker]]
name = "b"
command = ["/y"]
[[worker]]
name = "c"
command = ["/z"]
surge = -1
`, `app.toml:11: worker[2].surge: must not be negative`},
		{"[worker.env] sub-table", `
[[worker]]
command = ["/x"]
[worker.env]
APP = "x"
NOTIFY_SOCKET = "/run/x"
`, `app.toml:6: worker[0].env.NOTIFY_SOCKET: is reserved`},
		{"[worker.env] of the second [[worker]]", `
[[worker]]
name = "a"
command = ["/x"]
[worker.env]
A = "1"
[[worker]]
name = "b"
command = ["/y"]
[worker.env]
B = "2"
C = 3
`, `app.toml:12: worker[1].env.C: want a string`},
		{"multi-line basic string", `
[[worker]]
command = ["/x", """
[[worker]]
count = 1
cont = \"""
"""]
cont = 2
`, `app.toml:8: worker[0].cont: unknown key`},
		{"multi-line literal string", `
[[worker]]
command = ['''
[control]
x = 1
''']
colour = 2
`, `app.toml:7: worker[0].colour: unknown key`},
		{"comments with = and [", `
# [[worker]] = 1
[[worker]] # [control] x = 1
command = ["/x"] # count = [
# cont = 1
count = 0 # ]
`, `app.toml:6: worker[0].count: 0 is not between 1 and 4096`},
		{"quoted keys", `
[[worker]]
"command" = ["/x"]
'count' = "x"
`, `app.toml:4: worker[0].count: want an integer`},
		{"quoted key with a dot", `
[[worker]]
command = ["/x"]
env = { "A.B" = 1 }
`, `app.toml:4: worker[0].env."A.B": want a string`},
		{"quoted table header", `
[[worker]]
command = ["/x"]
[ "control" ]
sock = "/x"
`, `app.toml:5: control.sock: unknown key`},
		{"missing key: the table's line", `
[[worker]]
name = "a"
command = ["/x"]

[[worker]]
name = "b"
`, `app.toml:6: worker[1].command: required`},
		{"second [[listen]]", `
[[listen]]
name = "a"
address = "tcp://127.0.0.1:1"
[[listen]]
name = "b"
address = "tcp://127.0.0.1:2"
mode = "rw"
[[worker]]
command = ["/x"]
`, `app.toml:8: listen[1].mode: "rw" is not an octal file mode`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("app.toml", []byte(c.text))
			if err == nil {
				t.Fatalf("no error for:%s", c.text)
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("error:\n  %s\nwant prefix:\n  %s", err, c.want)
			}
		})
	}
}

// Every key of the full example gets a line, under the name the reader uses.
func TestLineIndexFull(t *testing.T) {
	text := `[[listen]]
name = "http"
[[worker]]
name = "a"
[worker.env]
A = "1"
[[worker]]
name = "b"
env.B = "2"
sockets = [
  "http",
]
[control]
socket = "/run/x.sock"
`
	want := map[string]int{
		"listen": 1, "listen[0]": 1, "listen[0].name": 2,
		"worker": 3, "worker[0]": 3, "worker[0].name": 4, "worker[0].env": 5, "worker[0].env.A": 6,
		"worker[1]": 7, "worker[1].name": 8, "worker[1].env": 9, "worker[1].env.B": 9,
		"worker[1].sockets": 10, "worker[1].sockets[0]": 11,
		"control": 13, "control.socket": 14,
	}
	got := lineIndex(text)
	for k, line := range want {
		if got[k] != line {
			t.Errorf("%s: line %d, want %d", k, got[k], line)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d paths, want %d: %v", len(got), len(want), got)
	}
}
