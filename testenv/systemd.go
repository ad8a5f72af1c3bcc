package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bootScript gives the user manager a private /run (so its sockets and units
// never touch the host's) and the XDG_RUNTIME_DIR it expects, then becomes
// the manager: unshare and sh exec into it, so the pid we started is the
// manager's.
const bootScript = `set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system /run/user/0/systemd/user
export XDG_RUNTIME_DIR=/run/user/0
exec /usr/lib/systemd/systemd --user
`

// runtimeDir is XDG_RUNTIME_DIR inside the manager's namespace.
const runtimeDir = "/run/user/0"

// Manager is a systemd user manager private to one test.
type Manager struct {
	PID     int
	logPath string
	done    chan struct{}
}

// StartUserManager boots a private systemd user manager. The output of every
// service goes to one log file, shown when the test fails. Cleanup stops
// the manager and kills whatever it started, and nothing else. The test fails
// at once when the machine cannot do this (not root, no systemd, no unshare):
// an end-to-end test that silently does not run would be worse than none.
func StartUserManager(t testing.TB) *Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: booting a systemd user manager needs root (uid %d)", os.Geteuid())
	}
	for _, p := range []string{"unshare", "nsenter", "systemctl"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("testenv: %s not found: install util-linux and systemd (apt-get install systemd util-linux)", p)
		}
	}
	if _, err := os.Stat("/usr/lib/systemd/systemd"); err != nil {
		t.Fatalf("testenv: /usr/lib/systemd/systemd missing: apt-get install systemd")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "boot.sh")
	if err := os.WriteFile(script, []byte(bootScript), 0o755); err != nil {
		t.Fatal(err)
	}
	m := &Manager{logPath: filepath.Join(dir, "manager.log"), done: make(chan struct{})}
	logf, err := os.Create(m.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "/bin/sh", script)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: starting the user manager: %v", err)
	}
	m.PID = cmd.Process.Pid
	go func() {
		cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() { m.close(t) })

	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := m.Systemctl("is-system-running")
		state := strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		select {
		case <-m.done:
			t.Fatalf("testenv: the user manager exited during boot:\n%s", m.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: user manager not running after 20s (state %q):\n%s", state, m.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The user manager sends its own stdio to /dev/null and there is no
	// journald in its namespace, so a drop-in for every service sends unit
	// output to the log file instead (service.d/ applies to all services).
	m.WriteUnit(t, "service.d/50-testenv-log.conf", fmt.Sprintf("[Service]\nStandardOutput=append:%s\nStandardError=append:%s\n", m.logPath, m.logPath))
	return m
}

// close stops every unit by stopping the manager, then kills whatever is
// left of the processes it started.
func (m *Manager) close(t testing.TB) {
	if t.Failed() {
		t.Logf("systemd user manager log (pid %d):\n%s", m.PID, m.Log())
	}
	procs := append(Descendants(m.PID), m.PID)
	syscall.Kill(m.PID, syscall.SIGTERM) // the manager stops its units and exits
	select {
	case <-m.done:
	case <-time.After(15 * time.Second):
		t.Errorf("testenv: user manager %d did not exit within 15s of SIGTERM; killing it", m.PID)
	}
	for _, pid := range append(procs, Descendants(m.PID)...) {
		if Alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		t.Errorf("testenv: user manager %d survived SIGKILL", m.PID)
	}
}

// Log returns what the manager and its units have written so far.
func (m *Manager) Log() string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", m.logPath, err)
	}
	return string(b)
}

// Systemctl runs `systemctl --user ARGS` inside the manager's namespace and
// returns its combined output; a non-zero exit is an error carrying it.
func (m *Manager) Systemctl(args ...string) (string, error) {
	return nsenter(m.PID, "-m", []string{"XDG_RUNTIME_DIR=" + runtimeDir},
		append([]string{"systemctl", "--user", "--no-pager"}, args...))
}

// MustSystemctl is Systemctl that fails the test on error.
func (m *Manager) MustSystemctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := m.Systemctl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// WriteUnit installs a unit file in the manager's runtime unit directory and
// reloads the manager's configuration.
func (m *Manager) WriteUnit(t testing.TB, name, content string) {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(m.PID), "root", runtimeDir, "systemd", "user")
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	m.MustSystemctl(t, "daemon-reload")
}

// Show returns one property of a unit.
func (m *Manager) Show(t testing.TB, unit, property string) string {
	t.Helper()
	return strings.TrimSpace(m.MustSystemctl(t, "show", "-p", property, "--value", unit))
}

// MainPID returns the unit's main pid, failing the test if it has none.
func (m *Manager) MainPID(t testing.TB, unit string) int {
	t.Helper()
	pid, err := strconv.Atoi(m.Show(t, unit, "MainPID"))
	if err != nil || pid == 0 {
		t.Fatalf("testenv: %s has no MainPID", unit)
	}
	return pid
}

// WaitActive waits until the unit is active.
func (m *Manager) WaitActive(t testing.TB, unit string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := m.Systemctl("is-active", unit)
		if err == nil {
			return
		}
		state := strings.TrimSpace(out)
		if state == "failed" || time.Now().After(deadline) {
			status, _ := m.Systemctl("status", unit)
			t.Fatalf("testenv: %s is %s, want active:\n%s", unit, state, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
