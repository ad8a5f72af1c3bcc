package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
	"golang.org/x/sys/unix"
)

// TestControlConfigSyntax: `sockshim reload -c FILE` and `status` with a
// FILE that is not TOML say where it is broken, instead of looking for the
// supervisor at the default socket; a FILE that is TOML but fails a check
// still reaches the supervisor, which reports it.
func TestControlConfigSyntax(t *testing.T) {
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 1))
	// Line 3 of the [[worker]] part is broken; [control] socket comes after.
	a.rewrite(t, "[[worker]]\nname = \"tw\"\ncount = = 2\n")
	want := fmt.Sprintf("%s:%d: TOML syntax: ", a.cfgPath, strings.Count(a.listen, "\n")+3)
	for _, cmd := range []string{"reload", "status"} {
		code, stdout, stderr := sockshimCmd(t, b, cmd, "-c", a.cfgPath)
		if code != 1 || !strings.Contains(stderr, want) || strings.Contains(stderr, "is it running") {
			t.Errorf("%s with a TOML syntax error: exit %d, want 1 and %q\nstdout: %s\nstderr: %s", cmd, code, want, stdout, stderr)
		}
	}

	out, err := a.deploy(t, strings.Replace(workerConfig(b, "v2", "rolling", 1, 1), "count =", "cont =", 1))
	if err == nil || !strings.Contains(out, "worker[0].cont: unknown key") || !strings.Contains(out, "nothing changed") {
		t.Errorf("reload with a config that fails a check: %v\n%s", err, out)
	}
	if got := get(t, a.url); got.version != "v1" {
		t.Errorf("answer %+v after the rejected configs, want v1", got)
	}
}

// TestControlRefusesImpostor: a server another user runs on the control
// socket's path does not get to tell a deploy that its reload succeeded.
func TestControlRefusesImpostor(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs a server as nobody and needs root")
	}
	b := build(t)
	dir := testenv.NobodyDir(t)
	sock := filepath.Join(dir, "app.sock")
	testenv.FakeControlServer(t, sock, nil)

	cfg := filepath.Join(dir, "app.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[[worker]]\ncommand = [\"/bin/true\"]\n[control]\nsocket = %q\n", sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := sockshimCmd(t, b, "reload", "-c", cfg)
	if code != 1 || strings.Contains(out, "generation 42") || !strings.Contains(errOut, sock) || !strings.Contains(errOut, "uid 65534") {
		t.Errorf("reload answered by nobody's server: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	t.Logf("sockshim reload: %s", strings.TrimSpace(errOut))
}

// TestControlAfterEMFILE: idle control connections that exhaust the
// supervisor's descriptors make accept fail for a while; once they are gone,
// `sockshim status` and `reload` are answered again.
func TestControlAfterEMFILE(t *testing.T) {
	b := build(t)
	a := startServing(t, b, workerConfig(b, "v1", "rolling", 1, 1))
	pid := a.sup.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var orig unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &orig); err != nil {
		t.Fatal(err)
	}
	low := orig
	low.Cur = uint64(len(fds) + 4)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &low, nil); err != nil {
		t.Fatal(err)
	}
	var idle []net.Conn
	for range 100 {
		c, err := net.Dial("unix", a.ctl)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	a.sup.awaitLog(t, "too many open files")
	for _, c := range idle {
		c.Close()
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "`sockshim status` to answer after EMFILE", func() bool {
		code, _, _ := sockshimCmd(t, b, "status", "-c", a.cfgPath)
		return code == 0
	})
	t.Logf("status answered %s after the idle connections closed (soft RLIMIT_NOFILE %d)", time.Since(start).Round(time.Millisecond), low.Cur)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &orig, nil); err != nil {
		t.Fatal(err)
	}
	a.mustDeploy(t, workerConfig(b, "v2", "rolling", 1, 1))
	if got := get(t, a.url); got.version != "v2" {
		t.Errorf("answer %+v after the reload, want v2", got)
	}
	if n := strings.Count(a.sup.log.String(), "too many open files"); n != 1 {
		t.Errorf("EMFILE logged %d times, want once", n)
	}
}
