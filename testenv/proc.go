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
)

// procStat returns a process's state letter and parent pid from
// /proc/PID/stat (the command name may contain spaces and parentheses, so
// parse from the last ')').
func procStat(pid int) (state byte, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+4 >= len(s) {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err
}

// parents maps every pid on the machine to its parent.
func parents() map[int]int {
	out := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, err := procStat(pid); err == nil {
			out[pid] = ppid
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
		if st, _, err := procStat(p); err == nil && st == 'Z' {
			out = append(out, p)
		}
	}
	return out
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	st, _, err := procStat(pid)
	return err == nil && st != 'Z'
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

// FDs returns a process's open descriptors and what they point to.
func FDs(pid int) (map[int]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		out[fd] = target
	}
	return out, nil
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
