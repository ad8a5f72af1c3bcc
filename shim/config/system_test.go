package config

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/internal/unixaddr"
)

// load writes text to app.toml in a fresh directory and loads it; the
// directory's path replaces DIR in text.
func load(t *testing.T, text string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "app.toml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "DIR", dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	return dir, err
}

const worker = "[[worker]]\ncommand = [\"/bin/app\"]\n"

// TestSystemChecks: a config that names users, groups, directories or
// addresses that cannot work on this machine fails at load, with the line.
func TestSystemChecks(t *testing.T) {
	listen := func(addrs ...string) string {
		s := ""
		for i, a := range addrs {
			s += fmt.Sprintf("[[listen]]\nname = \"s%d\"\naddress = %q\n", i, a)
		}
		return s
	}
	long := "/" + strings.Repeat("x", unixaddr.MaxPath)
	cases := []struct{ name, text, want string }{
		{"user by name", worker + "user = \"nobody\"\n", ""},
		{"user by id", worker + "user = \"0\"\n", ""},
		{"no such user", worker + "user = \"no-such-user\"\n", `:3: worker[0].user: no such user "no-such-user"`},
		{"no such uid", worker + "user = \"3999999999\"\n", `:3: worker[0].user: no such user "3999999999"`},
		{"group by name", worker + "user = \"nobody\"\ngroup = \"root\"\n", ""},
		{"group by id", worker + "group = \"0\"\n", ""},
		{"no such group", worker + "user = \"root\"\ngroup = \"no-such-group\"\n", `:4: worker[0].group: no such group "no-such-group"`},
		{"user in the second worker", worker + "name = \"a\"\n[[worker]]\nname = \"b\"\ncommand = [\"/x\"]\nuser = \"no-such-user\"\n", `:7: worker[1].user: no such user "no-such-user"`},
		{"dir", worker + "dir = \"DIR\"\n", ""},
		{"dir missing", worker + "dir = \"DIR/missing\"\n", `:3: worker[0].dir: directory DIR/missing does not exist`},
		{"dir is a file", worker + "dir = \"DIR/app.toml\"\n", `:3: worker[0].dir: DIR/app.toml is not a directory`},
		{"dir relative", worker + "dir = \"srv/app\"\n", `:3: worker[0].dir: "srv/app" is not an absolute path`},
		{"unix socket dir", listen("unix:DIR/a.sock") + worker, ""},
		{"unix socket dir missing", listen("unix:DIR/run/a.sock") + worker, `:3: listen[0].address: "unix:DIR/run/a.sock": directory DIR/run does not exist`},
		{"abstract socket", listen("unix:@sockshim-test") + worker, ""},
		{"same address", listen("tcp://127.0.0.1:8080", "tcp4://127.0.0.1:8080") + worker,
			`:6: listen[1].address: "tcp4://127.0.0.1:8080" is the same address as listen[0].address = "tcp://127.0.0.1:8080" (line 3)`},
		{"same wildcard", listen("tcp://[::]:80", "tcp6://:80") + worker, `:6: listen[1].address: "tcp6://:80" is the same address as listen[0]`},
		{"IPv4-mapped", listen("udp://[::ffff:127.0.0.1]:53", "udp://127.0.0.1:53") + worker, `:6: listen[1].address: "udp://127.0.0.1:53" is the same address as listen[0]`},
		{"same file", listen("tcp://:1", "unix:DIR/a.sock", "unixgram:DIR//a.sock") + worker, `:9: listen[2].address: "unixgram:DIR//a.sock" is the same address as listen[1].address = "unix:DIR/a.sock" (line 6)`},
		{"same abstract name", listen("unix:@a", "unix:@a") + worker, `:6: listen[1].address: "unix:@a" is the same address as listen[0]`},
		{"tcp and udp", listen("tcp://127.0.0.1:53", "udp://127.0.0.1:53") + worker, ""},
		{"abstract names per type", listen("unix:@a", "unixgram:@a") + worker, ""},
		{"port 0 twice", listen("tcp://127.0.0.1:0", "tcp://127.0.0.1:0") + worker, ""},
		{"control socket of the longest path", worker + "[control]\nsocket = \"" + long[:unixaddr.MaxPath] + "\"\n", ""},
		{"control socket too long", worker + "[control]\nsocket = \"" + long + "\"\n", fmt.Sprintf(`:4: control.socket: %q is 108 bytes; a unix socket path holds at most 107`, long)},
		{"listen socket too long", listen("unix:"+long) + worker, `:3: listen[0].address: "unix:` + long + `": socket path is 108 bytes; a unix socket path holds at most 107`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, err := load(t, c.text)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want := filepath.Join(dir, "app.toml") + strings.ReplaceAll(c.want, "DIR", dir)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error:\n  %v\nwant prefix:\n  %s", err, want)
			}
		})
	}
}

func TestDurations(t *testing.T) {
	for _, c := range []struct{ value, want string }{
		{"2562047h47m16.854775807s", ""},
		{"9223372036854775807ns", ""},
		{"1000000000h", `"1000000000h" is too long: the longest duration is 2562047h47m16.854775807s`},
		{"9223372036854775808ns", `"9223372036854775808ns" is too long`},
		{"2562048h", `"2562048h" is too long`},
		{"-1000000000h", `"-1000000000h" must be positive`},
		{"-1s", `"-1s" must be positive`},
		{"1e3s", `"1e3s" is not a duration`},
		{"1000000000", `"1000000000" is not a duration`},
		{"1000000000x", `"1000000000x" is not a duration`},
		{"", `empty duration`},
	} {
		_, err := Parse("app.toml", []byte(worker+"ready_timeout = \""+c.value+"\"\n"))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.value, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), "app.toml:3: worker[0].ready_timeout: "+c.want)):
			t.Errorf("%q: error %v, want %s", c.value, err, c.want)
		}
	}
}

// durationSyntax accepts exactly what time.ParseDuration accepts, except for
// overflow.
func TestDurationSyntax(t *testing.T) {
	for _, s := range []string{
		"0", "+0", "-0", "1s", "1.5h", ".5s", "1.s", "1h2m3s4ms5us6µs7μs8ns", "+3m", "-3m", "00010s",
		"", "+", "-", ".", "s", "1", "1.", ".s", "1 s", "1S", "1sec", "1s2", "--1s", "1..5s", "0x10s", "1e9ns", "1h-1m", "∞s",
	} {
		_, err := time.ParseDuration(s)
		if got := durationSyntax(s); got != (err == nil) {
			t.Errorf("durationSyntax(%q) = %v, ParseDuration error %v", s, got, err)
		}
	}
}

func TestNULByte(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"[[worker]]\ncommand = [\"/bin/app\\u0000\"]\n", `app.toml:2: worker[0].command: element 0: "/bin/app\x00" contains a NUL byte`},
		{worker + "user = \"root\\u0000x\"\n", `app.toml:3: worker[0].user: "root\x00x" contains a NUL byte`},
		{worker + "env = { A = \"\\u0000\" }\n", `app.toml:3: worker[0].env.A: "\x00" contains a NUL byte`},
	} {
		_, err := Parse("app.toml", []byte(c.text))
		if err == nil || err.Error() != c.want {
			t.Errorf("error:\n  %v\nwant:\n  %s", err, c.want)
		}
	}
}

func TestReservedEnv(t *testing.T) {
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "SOCKSHIM_GROUP"} {
		if !ReservedEnv(k) {
			t.Errorf("%s is not reserved", k)
		}
		_, err := Parse("app.toml", []byte(worker+"env = { "+k+" = \"1\" }\n"))
		if want := "app.toml:3: worker[0].env." + k + ": is reserved by sockshim"; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %v, want %s", err, want)
		}
	}
	for _, k := range []string{"PATH", "LISTEN", "WATCHDOG", "APP_ENV"} {
		if ReservedEnv(k) {
			t.Errorf("%s is reserved", k)
		}
	}
}

func TestCredential(t *testing.T) {
	id := func(s string) uint32 {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		return uint32(n)
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	self := syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	for _, c := range []struct {
		user, group string
		want        syscall.Credential
	}{
		{"", "", self},
		// Only a user: its own memberships, as systemd's User= gives them.
		{"nobody", "", syscall.Credential{Uid: id(nobody.Uid), Gid: id(nobody.Gid), Groups: []uint32{id(nobody.Gid)}}},
		{nobody.Uid, "", syscall.Credential{Uid: id(nobody.Uid), Gid: id(nobody.Gid), Groups: []uint32{id(nobody.Gid)}}},
		{"nobody", "root", syscall.Credential{Uid: id(nobody.Uid), Gid: 0, Groups: []uint32{0}}},
		{"", "0", syscall.Credential{Uid: self.Uid, Gid: 0, Groups: []uint32{0}}},
	} {
		got, err := Credential(c.user, c.group)
		if err != nil {
			t.Errorf("Credential(%q, %q): %v", c.user, c.group, err)
			continue
		}
		if got.Uid != c.want.Uid || got.Gid != c.want.Gid || !slices.Equal(got.Groups, c.want.Groups) || got.Groups == nil || got.NoSetGroups {
			t.Errorf("Credential(%q, %q) = %+v, want %+v with supplementary groups set", c.user, c.group, *got, c.want)
		}
	}
	if _, err := Credential("no-such-user", ""); err == nil || err.Error() != `no such user "no-such-user"` {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := Credential("root", "no-such-group"); err == nil || err.Error() != `no such group "no-such-group"` {
		t.Errorf("unknown group: %v", err)
	}
}
