package e2e

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
)

// installApp writes a .socket and a Type=notify .service running sockshim
// with cfgBody (the [[worker]] part of the config) and starts the socket.
func installApp(t testing.TB, m *testenv.Manager, b bins, name, cfgBody string) *app {
	t.Helper()
	a := newApp(t, b, name)
	a.m = m
	a.rewrite(t, cfgBody)
	port := a.port
	m.WriteUnit(t, name+".socket", fmt.Sprintf(`[Unit]
Description=%[1]s socket

[Socket]
ListenStream=127.0.0.1:%[2]d
FileDescriptorName=http
Backlog=4096

[Install]
WantedBy=sockets.target
`, name, port))
	writeService(t, m, b, name, a.cfgPath, "Requires="+name+".socket\n")
	m.MustSystemctl(t, "start", name+".socket")
	return a
}

// writeService writes the Type=notify unit name.service that runs sockshim
// on cfgPath and reloads it with `sockshim reload`; unitExtra goes into its
// [Unit] section.
func writeService(t testing.TB, m *testenv.Manager, b bins, name, cfgPath, unitExtra string) {
	t.Helper()
	m.WriteUnit(t, name+".service", fmt.Sprintf(`[Unit]
Description=%[1]s under sockshim
%[4]s
[Service]
Type=notify
NotifyAccess=main
ExecStart=%[2]s run -c %[3]s
ExecReload=%[2]s reload -c %[3]s
KillMode=mixed
TimeoutStopSec=30
`, name, b.sockshim, cfgPath, unitExtra))
}

// activate sends the first request, which makes systemd start the service,
// and returns its answer once the service is active.
func (a *app) activate(t testing.TB) answer {
	t.Helper()
	within := a.upWithin(t)
	first := getWithin(t, a.url, within)
	a.m.WaitActive(t, a.name+".service", within)
	return first
}

// TestSystemdSocketActivated is the core path through a real systemd: the
// first connection activates the service, generation 1 serves from worker
// ids 0…count-1, systemctl status shows sockshim's STATUS, and stop drains
// leaving no process behind.
func TestSystemdSocketActivated(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	a := installApp(t, m, b, "hello", fmt.Sprintf(`
[[worker]]
name = "tw"
command = %s
count = 3
ready_timeout = "10s"
drain_timeout = "5s"
`, tomlList(b.testworker, "-version", "v1", "-report", "FDDIR")))

	if state := m.Show(t, "hello.service", "ActiveState"); state != "inactive" {
		t.Fatalf("service %s before the first connection; want inactive (socket activation)", state)
	}
	if first := a.activate(t); first.generation != "1" || first.version != "v1" {
		t.Fatalf("first answer %+v, want generation 1, v1", first)
	}
	mainPID := m.MainPID(t, "hello.service")

	st := status(t, a.ctl)
	if st.PID != mainPID {
		t.Errorf("status pid %d, MainPID %d", st.PID, mainPID)
	}
	pids := workerPIDs(st, "ready")
	var ids []int
	for _, w := range st.Groups[0].Workers {
		ids = append(ids, w.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []int{0, 1, 2}) || len(pids) != 3 {
		t.Fatalf("workers %v (pids %v), want ids [0 1 2] all ready", ids, pids)
	}
	for range 30 {
		a1 := get(t, a.url)
		pid, _ := strconv.Atoi(a1.pid)
		if a1.generation != "1" || !slices.Contains(pids, pid) {
			t.Fatalf("answer %+v not from generation-1 workers %v", a1, pids)
		}
	}
	for _, pid := range pids {
		checkInheritedFDs(t, a.fdDir, pid, 1)
		env := testenv.ReadEnvReport(t, a.fdDir, pid)
		if env["LISTEN_FDNAMES"] != "http" || env["LISTEN_FDS"] != "1" || env["LISTEN_PID"] != strconv.Itoa(pid) {
			t.Errorf("worker %d LISTEN_* = %v", pid, env)
		}
		if !notifySocketPath.MatchString(env["NOTIFY_SOCKET"]) {
			t.Errorf("worker %d NOTIFY_SOCKET=%q, want its sockshim proxy", pid, env["NOTIFY_SOCKET"])
		}
		for k := range env {
			if strings.HasPrefix(k, "WATCHDOG_") {
				t.Errorf("worker %d sees %s", pid, k)
			}
		}
	}

	out, _ := m.Systemctl("status", "hello.service")
	if !strings.Contains(out, `Status: "gen 1: tw 3/3 ready"`) {
		t.Errorf("systemctl status lacks sockshim's STATUS line:\n%s", out)
	}
	if z := testenv.Zombies(mainPID); len(z) > 0 {
		t.Errorf("zombies under sockshim: %v", z)
	}

	m.MustSystemctl(t, "stop", "hello.service", "hello.socket")
	testenv.WaitGone(t, append([]int{mainPID}, pids...), 10*time.Second)
	if state := m.Show(t, "hello.service", "ActiveState"); state != "inactive" {
		t.Errorf("after stop: %s, want inactive", state)
	}
	if res := m.Show(t, "hello.service", "Result"); res != "success" {
		t.Errorf("after stop: Result=%s, want success (sockshim exits 0 after draining)", res)
	}
	// The socket unit is stopped too, so nothing may answer any more.
	if c, err := net.DialTimeout("tcp", strings.TrimSuffix(strings.TrimPrefix(a.url, "http://"), "/"), time.Second); err == nil {
		c.Close()
		t.Errorf("port still accepting after stop")
	}
}

// TestSlowFirstStart: workers that take longer to come up than a client's
// usual patience, still within their ready_timeout. The connection that
// activates the service waits in the socket's queue and is answered by
// generation 1; nothing is refused meanwhile.
func TestSlowFirstStart(t *testing.T) {
	const startDelay = 6 * time.Second
	b := build(t)
	m := testenv.StartUserManager(t)
	a := installApp(t, m, b, "slow", fmt.Sprintf(`
[[worker]]
name = "tw"
command = %s
count = 2
ready_timeout = "20s"
`, tomlList(b.testworker, "-version", "v1", "-start-delay", startDelay.String())))
	began := time.Now()
	first := a.activate(t)
	if took := time.Since(began); first.generation != "1" || first.version != "v1" || took < startDelay {
		t.Fatalf("first answer %+v after %s; want generation 1, v1, after the %s start", first, took.Round(time.Millisecond), startDelay)
	}
	if st := status(t, a.ctl); len(workerPIDs(st, "ready")) != 2 {
		t.Errorf("after the first answer: %+v, want 2 ready workers", st.Groups)
	}
}

// TestWatchdogUnderSystemd: with WatchdogSec= set, sockshim keeps a real
// systemd's watchdog fed; the service outlives several periods unharmed.
func TestWatchdogUnderSystemd(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	a := installApp(t, m, b, "dog", workerConfig(b, "v1", "rolling", 1, 1))
	m.WriteUnit(t, "dog.service.d/watchdog.conf", "[Service]\nWatchdogSec=1\nRestart=on-failure\n")
	a.activate(t)
	pid := m.MainPID(t, "dog.service")
	time.Sleep(3500 * time.Millisecond)
	if got := m.MainPID(t, "dog.service"); got != pid {
		t.Errorf("MainPID %d after 3.5 s with WatchdogSec=1, was %d: the watchdog fired", got, pid)
	}
	if n := m.Show(t, "dog.service", "NRestarts"); n != "0" {
		t.Errorf("NRestarts=%s", n)
	}
	if !strings.Contains(m.Log(), "watchdog enabled") {
		t.Errorf("sockshim did not see WATCHDOG_USEC")
	}
}

// notifySocketPath is where a root sockshim puts a worker's notify socket.
var notifySocketPath = regexp.MustCompile(`^/run/sockshim/notify\.[0-9]+/w[0-9]+$`)
