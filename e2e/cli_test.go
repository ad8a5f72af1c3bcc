package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
)

// sockshimCmd runs the sockshim binary and returns its exit code, stdout
// and stderr.
func sockshimCmd(t *testing.T, b bins, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(b.sockshim, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("sockshim %v: %v", args, err)
	return 0, "", ""
}

// TestCommandLine: exit codes and messages of the commands an operator
// types, on good and bad input.
func TestCommandLine(t *testing.T) {
	b := build(t)
	dir := t.TempDir()
	text := "[[listen]]\nname = \"http\"\naddress = \"tcp://127.0.0.1:1\"\n\n[[worker]]\ncommand = [\"/bin/true\"]\ncount = 2\n"
	good, bad := filepath.Join(dir, "good.toml"), filepath.Join(dir, "bad.toml")
	os.WriteFile(good, []byte(text), 0o644)
	// Two mistakes, on lines 7 and 8.
	os.WriteFile(bad, []byte(strings.Replace(text, "count = 2", "cont = 2\ndrain_timeout = \"soon\"", 1)), 0o644)
	longCtl := filepath.Join(dir, "long.toml")
	os.WriteFile(longCtl, []byte(text+fmt.Sprintf("[control]\nsocket = %q\n", "/tmp/"+strings.Repeat("x", 120)+".sock")), 0o644)
	badErrs := []string{
		bad + `:7: worker[0].cont: unknown key (did you mean "count"?)`,
		bad + `:8: worker[0].drain_timeout:`,
	}

	for _, c := range []struct {
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{nil, 2, nil, []string{"usage: sockshim COMMAND"}},
		{[]string{"frobnicate"}, 2, nil, []string{`unknown command "frobnicate"`}},
		{[]string{"help"}, 0, []string{"usage: sockshim COMMAND"}, nil},
		{[]string{"version"}, 0, []string{"sockshim"}, nil},
		{[]string{"check"}, 2, nil, []string{"-c FILE is required"}},
		{[]string{"check", "-c", good}, 0, []string{good + ": ok (1 listeners, 1 groups, 2 workers)"}, nil},
		{[]string{"check", "-c", bad}, 1, nil, badErrs},
		{[]string{"check", "-c", filepath.Join(dir, "missing.toml")}, 1, nil, []string{"missing.toml: no such file"}},
		// A supervisor with a bad config never starts anything.
		{[]string{"run", "-c", bad}, 1, nil, badErrs},
		{[]string{"run", "-c", longCtl}, 1, nil, []string{"long.toml:", "control.socket", "a unix socket path holds at most 107"}},
		{[]string{"reload", "-c", good}, 1, nil, []string{"is it running with this config?"}},
		{[]string{"status", "-c", good}, 1, nil, []string{"is it running with this config?"}},
	} {
		name := strings.ReplaceAll(strings.Join(append([]string{"sockshim"}, c.args...), " "), dir+"/", "")
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := sockshimCmd(t, b, c.args...)
			if code != c.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, c.code, stdout, stderr)
			}
			for _, want := range c.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			for _, want := range c.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

// TestEmbeddedDefault is the README's first command: `sockshim run` with no
// config serves the example worker on 127.0.0.1:8080, `sockshim status` and
// `sockshim reload` without -c reach it, and it stops cleanly.
func TestEmbeddedDefault(t *testing.T) {
	b := build(t)
	up := newUpstream(t)
	sup := startSupervisor(t, b, "", "NOTIFY_SOCKET="+up.path)
	up.await(t, "READY=1", 15*time.Second)
	resp, err := http.Get("http://127.0.0.1:8080/")
	if err != nil {
		t.Fatalf("the embedded default does not answer on 127.0.0.1:8080: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "of generation 1") {
		t.Errorf("answer %d %q", resp.StatusCode, body)
	}
	// What it started, the user sees and reloads without naming a config.
	out, err := exec.Command(b.sockshim, "status").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello") {
		t.Errorf("sockshim status without -c: %v\n%s", err, out)
	}
	if out, err := exec.Command(b.sockshim, "reload").CombinedOutput(); err != nil {
		t.Fatalf("sockshim reload without -c: %v\n%s", err, out)
	}
	// A new connection: the first one, kept alive, is still the old
	// worker's until it drains.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err = fresh.Get("http://127.0.0.1:8080/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "of generation 2") {
		t.Errorf("after the reload the embedded example answers %q, want generation 2", body)
	}
	sup.signal(t, syscall.SIGTERM)
	if err := sup.wait(t, 15*time.Second); err != nil {
		t.Errorf("sockshim exit: %v", err)
	}
}

// TestUnprivileged: a user without a login session (no XDG_RUNTIME_DIR, no
// write access to /run) runs sockshim, and `sockshim status` finds it.
func TestUnprivileged(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs sockshim as nobody and needs root")
	}
	b := build(t)
	dir, err := os.MkdirTemp("", "sockshim-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir); os.RemoveAll(filepath.Join(os.TempDir(), "sockshim-65534")) })
	os.Chmod(dir, 0o755)
	port := testenv.FreePort(t)
	cfg := filepath.Join(dir, "app.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[[listen]]\nname = \"http\"\naddress = \"tcp://127.0.0.1:%d\"\n%s",
		port, workerConfig(b, "v1", "rolling", 1, 2))), 0o644)

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			env = append(env, kv)
		}
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd := exec.Command(b.sockshim, "run", "-c", cfg)
	cmd.Env, cmd.SysProcAttr = env, nobody
	sup := superviseCmd(t, cmd)

	waitFor(t, 15*time.Second, "`sockshim status` as nobody to answer", func() bool {
		st := exec.Command(b.sockshim, "status", "-c", cfg)
		st.Env, st.SysProcAttr = env, nobody
		out, err := st.CombinedOutput()
		return err == nil && strings.Contains(string(out), "tw 2/2 ready")
	})
	if got := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); got.version != "v1" {
		t.Errorf("answer %+v", got)
	}
	if _, err := os.Stat(filepath.Join(os.TempDir(), "sockshim-65534", "app.sock")); err != nil {
		t.Errorf("control socket not where an unprivileged user's commands look: %v", err)
	}
	sup.signal(t, syscall.SIGTERM)
	if err := sup.wait(t, 15*time.Second); err != nil {
		t.Errorf("sockshim as nobody exited with %v", err)
	}
}
