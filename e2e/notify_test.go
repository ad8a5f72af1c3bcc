package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/shim/notify"
)

// flooder sends datagrams to the unix datagram socket at argv[1]: argv[2]
// of them (blocking while the receiver's queue is full), each argv[3]. It
// prints how many were sent and the error that stopped it, if any.
const flooder = `import errno, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sent, err = 0, "none"
try:
    for _ in range(int(sys.argv[2])):
        s.sendto(sys.argv[3].encode(), sys.argv[1])
        sent += 1
except OSError as e:
    err = errno.errorcode[e.errno]
print("flood: sent=%d err=%s" % (sent, err), flush=True)
`

// writeFlooder stores the flooder where every user can run it.
func writeFlooder(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sockshim-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "flood.py")
	if err := os.WriteFile(path, []byte(flooder), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var floodResult = regexp.MustCompile(`flood: sent=(\d+) err=(\w+)`)

// floodAs runs the flooder as user and returns what it sent and the error
// that stopped it ("none" if it sent all).
func floodAs(t *testing.T, script, user, socket string, n int, payload string) (int, string) {
	t.Helper()
	out, err := exec.Command("runuser", "-u", user, "--", "python3", script, socket, strconv.Itoa(n), payload).CombinedOutput()
	m := floodResult.FindStringSubmatch(string(out))
	if err != nil || m == nil {
		t.Fatalf("flooder as %s: %v\n%s", user, err, out)
	}
	sent, _ := strconv.Atoi(m[1])
	return sent, m[2]
}

// throwawayUser creates a system user for the test and removes it at
// cleanup.
func throwawayUser(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("ssnt%d", os.Getpid())
	if out, err := exec.Command("useradd", "-r", "-M", "-s", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// notifySocket is the NOTIFY_SOCKET a worker was started with.
func notifySocket(t *testing.T, pid int) string {
	t.Helper()
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "NOTIFY_SOCKET="); ok {
			return v
		}
	}
	t.Fatalf("worker %d has no NOTIFY_SOCKET", pid)
	return ""
}

// dropped returns the counts of sockshim's "notify datagrams dropped" lines.
func dropped(log string) []int {
	var counts []int
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `msg="notify datagrams dropped"`) {
			continue
		}
		m := regexp.MustCompile(` count=(\d+) `).FindStringSubmatch(l)
		if m == nil {
			counts = append(counts, -1)
			continue
		}
		n, _ := strconv.Atoi(m[1])
		counts = append(counts, n)
	}
	return counts
}

// TestNotifySocketsPerUser: two groups run as two unprivileged users. Each
// worker becomes ready through a notify socket that is a file in
// /run/sockshim/notify.PID writable only by root and its own uid; the other
// user cannot send to it (EACCES), so sockshim never sees, or logs, the
// attempt. The directory is gone once sockshim stops.
func TestNotifySocketsPerUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("running workers as other users needs root")
	}
	b := build(t)
	script := writeFlooder(t)
	other := throwawayUser(t)
	group := func(name, user string) string {
		return fmt.Sprintf("\n[[worker]]\nname = %q\ncommand = %s\nuser = %q\nready_timeout = \"5s\"\n",
			name, tomlList(b.testworker, "-version", "v1"), user)
	}
	// startServing returns once every worker sent READY=1 on its socket.
	a := startServing(t, b, group("a", "nobody")+group("b", other))
	st := status(t, a.ctl)
	pa, pb := groupPIDs(st, "a"), groupPIDs(st, "b")
	if len(pa) != 1 || len(pb) != 1 {
		t.Fatalf("ready workers: a %v, b %v; want one each", pa, pb)
	}
	dir := fmt.Sprintf("/run/sockshim/notify.%d", a.sup.cmd.Process.Pid)
	sa, sb := notifySocket(t, pa[0]), notifySocket(t, pb[0])
	for _, s := range []string{sa, sb} {
		if filepath.Dir(s) != dir {
			t.Errorf("NOTIFY_SOCKET %s is not in %s", s, dir)
		}
		fi, err := os.Lstat(s)
		if err != nil {
			t.Fatal(err)
		}
		// The group bits of a file with an ACL are its mask; the owning
		// group's own entry is empty.
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Type() != os.ModeSocket || st.Uid != 0 || fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s: mode %v, uid %d; want a socket of root that others cannot write", s, fi.Mode(), st.Uid)
		}
	}
	if fi, err := os.Lstat(dir); err != nil || fi.Mode().Perm() != 0o711 {
		t.Fatalf("%s: %v, %v; want mode 0711", dir, fi, err)
	}

	// Another unprivileged uid cannot reach a's socket, nor a's uid b's.
	if sent, err := floodAs(t, script, other, sa, 100, "READY=1"); sent != 0 || err != "EACCES" {
		t.Errorf("%s sending to nobody's worker: sent %d, stopped by %s; want 0, EACCES", other, sent, err)
	}
	if sent, err := floodAs(t, script, "nobody", sb, 100, "READY=1"); sent != 0 || err != "EACCES" {
		t.Errorf("nobody sending to %s's worker: sent %d, stopped by %s; want 0, EACCES", other, sent, err)
	}
	// The worker's own uid can: its datagram arrives and, from outside the
	// worker's process group, is dropped and logged once.
	if sent, err := floodAs(t, script, "nobody", sa, 1, "READY=1"); sent != 1 || err != "none" {
		t.Errorf("nobody sending to its own worker: sent %d, stopped by %s; want 1, none", sent, err)
	}
	a.sup.awaitLog(t, `msg="notify datagrams dropped"`)
	if got := dropped(a.sup.log.String()); len(got) != 1 || got[0] != 1 {
		t.Errorf("dropped-datagram log lines: counts %v, want exactly [1]", got)
	}

	a.sup.signal(t, syscall.SIGTERM)
	if err := a.sup.wait(t, 20*time.Second); err != nil {
		t.Fatalf("sockshim exit: %v", err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("%s after sockshim stopped: %v; want it removed", dir, err)
	}
}

// TestNotifyFloodBounded: a process in the worker's own process group
// floods its notify socket with malformed datagrams. sockshim keeps serving
// and logs the drops as notify.ReportInterval allows: the first at once
// with count 1, then one summary per interval, the counts adding up to
// exactly what was sent.
func TestNotifyFloodBounded(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("running workers as other users needs root")
	}
	b := build(t)
	script := writeFlooder(t)
	const n = 20000
	// The flood runs in the background of the shell that then becomes the
	// worker, so it shares the worker's process group.
	sh := fmt.Sprintf(`python3 %s "$NOTIFY_SOCKET" %d not-key-value & exec "$@"`, script, n)
	start := time.Now()
	a := startServing(t, b, fmt.Sprintf("[[worker]]\nname = \"tw\"\ncommand = %s\nuser = \"nobody\"\nready_timeout = \"5s\"\n",
		tomlList("sh", "-c", sh, "sh", b.testworker, "-version", "v1")))
	if got := get(t, a.url); got.version != "v1" {
		t.Errorf("answer %+v while the worker floods its notify socket", got)
	}
	waitFor(t, 30*time.Second, "the flooder's result", func() bool { return floodResult.MatchString(a.sup.log.String()) })
	m := floodResult.FindStringSubmatch(a.sup.log.String())
	if m[1] != strconv.Itoa(n) || m[2] != "none" {
		t.Fatalf("flooder: sent %s, stopped by %s; want %d, none", m[1], m[2], n)
	}
	sum := func() int {
		total := 0
		for _, c := range dropped(a.sup.log.String()) {
			total += c
		}
		return total
	}
	waitFor(t, notify.ReportInterval+10*time.Second, fmt.Sprintf("log lines accounting for %d dropped datagrams", n),
		func() bool { return sum() >= n })
	elapsed := time.Since(start)
	counts := dropped(a.sup.log.String())
	if sum() != n {
		t.Errorf("dropped-datagram counts %v add up to %d, want %d", counts, sum(), n)
	}
	// Reports go out when the first datagram is dropped and at the end of
	// each interval after it that dropped more, all within elapsed.
	if limit := 1 + int(elapsed/notify.ReportInterval); len(counts) < 2 || counts[0] != 1 || len(counts) > limit {
		t.Errorf("dropped-datagram log lines: counts %v in %s; want the first 1 and at most %d lines", counts, elapsed.Round(time.Millisecond), limit)
	}
	t.Logf("%d datagrams dropped, logged as %v in %s", n, counts, elapsed.Round(time.Millisecond))
	if got := get(t, a.url); got.version != "v1" {
		t.Errorf("answer %+v after the flood", got)
	}
	if pids := workerPIDs(status(t, a.ctl), "ready"); len(pids) != 1 {
		t.Errorf("ready workers after the flood: %v, want 1", pids)
	}
}
