package testenv

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/internal/procfs"
)

// parents maps every pid on the machine to its parent.
func parents() map[int]int {
	out := map[int]int{}
	pids, _ := procfs.PIDs()
	for _, pid := range pids {
		if st, err := procfs.ReadStat(pid); err == nil {
			out[pid] = st.PPID
		}
	}
	return out
}

// Descendants returns the pids whose chain of parents includes pid.
func Descendants(pid int) []int {
	children := map[int][]int{}
	for p, pp := range parents() {
		children[pp] = append(children[pp], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// Zombies returns the children of pid that have exited but were not reaped.
func Zombies(pid int) []int {
	var out []int
	for p, pp := range parents() {
		if pp != pid {
			continue
		}
		if st, err := procfs.ReadStat(p); err == nil && st.State == 'Z' {
			out = append(out, p)
		}
	}
	return out
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	st, err := procfs.ReadStat(pid)
	return err == nil && st.State != 'Z'
}

// WaitGone waits until none of pids is alive, failing the test with the
// survivors after timeout.
func WaitGone(t testing.TB, pids []int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var alive []int
		for _, p := range pids {
			if Alive(p) {
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes still alive after %s: %v", timeout, alive)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Report is what the testworker writes about itself at startup with
// -report DIR, as DIR/PID.json.
type Report struct {
	PID int               `json:"pid"`
	FDs map[int]string    `json:"fds"` // open descriptors before main did anything
	Env map[string]string `json:"env"` // LISTEN_*, NOTIFY_SOCKET, WATCHDOG_*, SOCKSHIM_* as inherited
}

// ReadReport reads the report the testworker with pid wrote into dir.
func ReadReport(dir string, pid int) (*Report, error) {
	b, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(pid)+".json"))
	if err != nil {
		return nil, fmt.Errorf("testworker report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("testworker report %d: %w", pid, err)
	}
	return &r, nil
}

// ReadFDReport returns the descriptors a testworker held at startup.
func ReadFDReport(dir string, pid int) (map[int]string, error) {
	r, err := ReadReport(dir, pid)
	if err != nil {
		return nil, err
	}
	return r.FDs, nil
}

// ReadEnvReport returns the environment a testworker inherited.
func ReadEnvReport(t testing.TB, dir string, pid int) map[string]string {
	t.Helper()
	r, err := ReadReport(dir, pid)
	if err != nil {
		t.Fatal(err)
	}
	return r.Env
}

// nsenter runs args in the namespaces of pid (ns: nsenter's flag, "-m" for
// the mount namespace, "-a" for all) with env added, and returns the
// combined output; a non-zero exit is an error carrying the command and it.
func nsenter(pid int, ns string, env, args []string) (string, error) {
	full := append([]string{"-t", strconv.Itoa(pid), ns, "--", "env"}, env...)
	out, err := exec.Command("nsenter", append(full, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
