// Package cgroup contains each worker in a cgroup v2 of its own below the
// cgroup a service manager delegated to sockshim (systemd's Delegate=yes).
//
// sockshim's own cgroup counts as delegated when all of these hold:
//
//   - a cgroup v2 hierarchy is mounted at /sys/fs/cgroup (unified) or
//     /sys/fs/cgroup/unified (hybrid), and the kernel has cgroup.kill (5.14);
//   - the "0::" line of /proc/self/cgroup names a cgroup other than the
//     root, owned by sockshim's effective uid and writable by it (the
//     directory, cgroup.procs and cgroup.subtree_control);
//   - sockshim is the only process in it, as the main process of a service
//     is once ExecStartPre= has run (a shell or test harness beside it means
//     the cgroup is not sockshim's to divide);
//   - systemd's delegation mark, the trusted.delegate or user.delegate
//     extended attribute, is "1" where present. systemd 252's user
//     managers set neither; without one the three checks above decide.
//
// The no-internal-processes rule lets a cgroup with children hold no process
// of its own once controllers are enabled for them, so sockshim first moves
// into a leaf, "supervisor", and each worker is then started directly in its
// own leaf (clone3 with CLONE_INTO_CGROUP), where cgroup.kill reaches every
// process it ever forks, setsid daemons included.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sockshim/sockshim/internal/procfs"
	"golang.org/x/sys/unix"
)

// Tree is the delegated cgroup sockshim divides among itself and its
// workers.
type Tree struct {
	dir    string // absolute path of the delegated cgroup
	memory bool   // the memory controller is enabled for the workers' cgroups
}

// Detect finds sockshim's delegated cgroup v2. When there is none it
// returns nil and says why.
func Detect() (*Tree, string) {
	mount, err := v2Mount()
	if err != nil {
		return nil, err.Error()
	}
	rel, err := selfCgroup()
	if err != nil {
		return nil, err.Error()
	}
	if rel == "/" {
		return nil, "sockshim's cgroup is the root of the cgroup v2 hierarchy"
	}
	dir := filepath.Join(mount, rel)
	if reason := delegated(dir, os.Getpid()); reason != "" {
		return nil, reason
	}
	return &Tree{dir: dir}, ""
}

// Open returns the Tree of dir without checking that it is delegated.
func Open(dir string) *Tree { return &Tree{dir: dir} }

// Dir is the delegated cgroup's path.
func (t *Tree) Dir() string { return t.dir }

// Memory reports whether the workers' cgroups account memory.
func (t *Tree) Memory() bool { return t.memory }

// v2Mount returns where the cgroup v2 hierarchy is mounted.
func v2Mount() (string, error) {
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir, nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}

// selfCgroup returns this process's cgroup v2 path, relative to the mount.
func selfCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rel, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return rel, nil
		}
	}
	return "", errors.New(`no "0::" line in /proc/self/cgroup`)
}

// delegated returns why dir is not a cgroup that self may divide, or "".
func delegated(dir string, self int) string {
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		return fmt.Sprintf("%s has no cgroup.kill (Linux 5.14 or later)", dir)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Sprintf("%s: %v", dir, err)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Sprintf("%s is owned by uid %d, not sockshim's %d", dir, st.Uid, os.Geteuid())
	}
	for _, p := range []string{dir, filepath.Join(dir, "cgroup.procs"), filepath.Join(dir, "cgroup.subtree_control")} {
		if err := unix.Access(p, unix.W_OK); err != nil {
			return fmt.Sprintf("%s is not writable: %v", p, err)
		}
	}
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 8)
		n, err := unix.Getxattr(dir, attr, buf)
		if err == nil && string(buf[:n]) != "1" {
			return fmt.Sprintf("%s has %s=%q: not delegated", dir, attr, buf[:n])
		}
	}
	pids, err := Procs(dir)
	if err != nil {
		return err.Error()
	}
	if others := len(slices.DeleteFunc(pids, func(p int) bool { return p == self })); others > 0 {
		return fmt.Sprintf("%s holds %d processes besides sockshim", dir, others)
	}
	return ""
}

// Procs lists the processes directly in the cgroup dir.
func Procs(dir string) ([]int, error) {
	b, err := procfs.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("reading %s/cgroup.procs: %w", dir, err)
	}
	var pids []int
	for f := range strings.FieldsSeq(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s/cgroup.procs: %q", dir, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Enter moves every process of the tree's cgroup (sockshim alone) into the
// leaf child named leaf, then enables the memory controller for the
// children when it can; without it, memory is not reported.
func (t *Tree) Enter(leaf string) error {
	sub := filepath.Join(t.dir, leaf)
	if err := os.Mkdir(sub, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating cgroup %s: %w", sub, err)
	}
	pids, err := Procs(t.dir)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := write(sub, "cgroup.procs", strconv.Itoa(pid)); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	ctrl, err := os.ReadFile(filepath.Join(t.dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("reading %s/cgroup.controllers: %w", t.dir, err)
	}
	// Best effort: memory accounting is worth no loss of containment.
	if strings.Contains(" "+strings.TrimSpace(string(ctrl))+" ", " memory ") {
		t.memory = write(t.dir, "cgroup.subtree_control", "+memory") == nil
	}
	return nil
}

// Group is one worker's cgroup.
type Group struct {
	Dir string
	// fd is the directory, for CLONE_INTO_CGROUP, while open is set. A raw
	// descriptor: an *os.File would try to register it with the poller and
	// then flip it back to blocking for Fd(), syscalls wasted on every
	// worker start.
	fd   int
	open bool
}

// New creates the child cgroup name, killing and removing a leftover of
// that name first.
func (t *Tree) New(name string) (*Group, error) {
	g := &Group{Dir: filepath.Join(t.dir, name)}
	err := os.Mkdir(g.Dir, 0o755)
	if errors.Is(err, os.ErrExist) {
		if _, err = g.Remove(2 * time.Second); err == nil {
			err = os.Mkdir(g.Dir, 0o755)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("creating cgroup %s: %w", g.Dir, err)
	}
	fd, err := unix.Open(g.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Rmdir(g.Dir)
		return nil, fmt.Errorf("opening cgroup %s: %w", g.Dir, err)
	}
	g.fd, g.open = fd, true
	return g, nil
}

// FD is the cgroup directory's descriptor, for SysProcAttr.CgroupFD; valid
// until Close or Remove.
func (g *Group) FD() int { return g.fd }

// Close releases the directory descriptor once no process is started into
// the cgroup any more.
func (g *Group) Close() {
	if g.open {
		unix.Close(g.fd)
		g.open = false
	}
}

// Kill SIGKILLs every process in the cgroup and below it.
func (g *Group) Kill() error { return write(g.Dir, "cgroup.kill", "1") }

// Populated reports whether any process is in the cgroup or below it.
func (g *Group) Populated() (bool, error) {
	b, err := procfs.ReadFile(filepath.Join(g.Dir, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("reading %s/cgroup.events: %w", g.Dir, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return v != "0", nil
		}
	}
	return false, fmt.Errorf("%s/cgroup.events: no populated line", g.Dir)
}

// Remove kills what is left in the cgroup, waits at most timeout for it to
// empty and removes it. It reports whether anything was left to kill. A
// cgroup that is already gone is no error.
func (g *Group) Remove(timeout time.Duration) (killed bool, err error) {
	g.Close()
	// A worker that exited on its own usually left nothing behind: then
	// there is nothing to kill and no reason to write cgroup.kill.
	busy, err := g.Populated()
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if busy {
		if err := g.Kill(); errors.Is(err, os.ErrNotExist) {
			return true, nil
		} else if err != nil {
			return true, err
		}
	}
	deadline := time.Now().Add(timeout)
	for left := busy; left; {
		if time.Now().After(deadline) {
			return busy, fmt.Errorf("cgroup %s still populated %s after cgroup.kill", g.Dir, timeout)
		}
		time.Sleep(5 * time.Millisecond)
		if left, err = g.Populated(); err != nil {
			return busy, err
		}
	}
	if err := unix.Rmdir(g.Dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return busy, fmt.Errorf("removing cgroup %s: %w", g.Dir, err)
	}
	return busy, nil
}

// Usage is what a cgroup's processes used so far.
type Usage struct {
	CPU    time.Duration // cpu.stat usage_usec, kept without the cpu controller
	Memory int64         // memory.current in bytes; -1 without the memory controller
}

// Usage reads the cgroup's CPU time and, where accounted, its memory.
func (g *Group) Usage() (Usage, error) {
	u := Usage{Memory: -1}
	b, err := procfs.ReadFile(filepath.Join(g.Dir, "cpu.stat"))
	if err != nil {
		return u, fmt.Errorf("reading %s/cpu.stat: %w", g.Dir, err)
	}
	found := false
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			usec, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return u, fmt.Errorf("%s/cpu.stat: usage_usec %q", g.Dir, v)
			}
			u.CPU = time.Duration(usec) * time.Microsecond
			found = true
		}
	}
	if !found {
		return u, fmt.Errorf("%s/cpu.stat: no usage_usec", g.Dir)
	}
	b, err = procfs.ReadFile(filepath.Join(g.Dir, "memory.current"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return u, fmt.Errorf("reading %s/memory.current: %w", g.Dir, err)
	default:
		if u.Memory, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return u, fmt.Errorf("%s/memory.current: %q", g.Dir, b)
		}
	}
	return u, nil
}

// write writes value to the cgroup file dir/name in one write(2), as the
// kernel expects.
func write(dir, name, value string) error {
	if err := os.WriteFile(filepath.Join(dir, name), []byte(value), 0); err != nil {
		return fmt.Errorf("writing %q to %s/%s: %w", value, dir, name, err)
	}
	return nil
}
