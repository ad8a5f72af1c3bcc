package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Release is a Debian release the install tests boot.
type Release struct {
	Name    string // the suite, as debootstrap takes it
	Version string // Debian's release number
}

func (r Release) String() string { return "Debian " + r.Version + " (" + r.Name + ")" }

// Releases are the Debian releases the package tests run on: the previous
// stable (systemd 252) and the current one (systemd 257).
var Releases = []Release{{"bookworm", "12"}, {"trixie", "13"}}

// rootCache is the directory that keeps one Debian root per release between
// runs (a debootstrap takes 30 s to 4 min); SOCKSHIM_TEST_ROOT_CACHE
// overrides it.
func rootCache() string {
	if d := os.Getenv("SOCKSHIM_TEST_ROOT_CACHE"); d != "" {
		return d
	}
	return "/var/cache/sockshim-test"
}

// rootMu serializes the building of roots: two debootstraps at once would
// only slow each other down.
var rootMu sync.Mutex

// debianKeyring verifies every release's Release file: Debian 12's
// debian-archive-keyring (which apt depends on) holds the key that also
// signs trixie. Naming it makes debootstrap fail rather than go unverified
// when it is missing.
const debianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// DebianRoot returns a minimal Debian root of release rel with systemd,
// built once with debootstrap from the machine's own Debian mirror and cached
// in rootCache()/NAME.
func DebianRoot(t testing.TB, rel Release) string {
	t.Helper()
	rootMu.Lock()
	defer rootMu.Unlock()
	root := filepath.Join(rootCache(), rel.Name)
	if _, err := os.Stat(filepath.Join(root, "usr/lib/systemd/systemd")); err == nil {
		return root
	}
	for _, p := range []string{"debootstrap", "systemd-nspawn"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("testenv: %s not found: apt-get install debootstrap systemd-container", p)
		}
	}
	if _, err := os.Stat(debianKeyring); err != nil {
		t.Fatalf("testenv: %v: apt-get install debian-archive-keyring", err)
	}
	mirror, err := debianMirror()
	if err != nil {
		t.Fatal(err)
	}
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("testenv: building a %s root in %s from %s (cached afterwards)", rel, root, mirror)
	start := time.Now()
	out, err := exec.Command("debootstrap", "--keyring="+debianKeyring, "--variant=minbase",
		"--include=systemd,systemd-sysv,dbus", rel.Name, tmp, mirror).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: debootstrap %s: %v\n%s", rel.Name, err, tail(string(out), 40))
	}
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	t.Logf("testenv: debootstrap %s took %s", rel.Name, time.Since(start).Round(time.Second))
	return root
}

// debianMirror reads the first URIs: of the machine's own apt sources.
func debianMirror() (string, error) {
	f, err := os.Open("/etc/apt/sources.list.d/debian.sources")
	if err != nil {
		return "http://deb.debian.org/debian", nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "URIs:"); ok {
			return strings.Fields(v)[0], nil
		}
	}
	return "", fmt.Errorf("testenv: no URIs: in /etc/apt/sources.list.d/debian.sources")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Container is a booted systemd-nspawn container: a full systemd as PID 1
// sharing the host's network (so loopback load reaches it).
type Container struct {
	Root    string // its root directory on the host
	InitPID int    // host pid of the container's PID 1
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

// ScratchRoot copies the root base to a directory of the test's own, in
// dir/root, and removes it all at cleanup.
func ScratchRoot(t testing.TB, base string) (dir, root string) {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "sockshim-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	root = filepath.Join(dir, "root")
	if out, err := exec.Command("cp", "-a", "--reflink=auto", base, root).CombinedOutput(); err != nil {
		t.Fatalf("testenv: copying the root: %v\n%s", err, out)
	}
	return dir, root
}

// containers numbers the containers of this process, for unique names.
var containers atomic.Int64

// BootContainer copies base to a scratch root and boots it. Cleanup halts it
// and removes the copy.
func BootContainer(t testing.TB, base string) *Container {
	t.Helper()
	dir, root := ScratchRoot(t, base)
	c := &Container{Root: root, logPath: filepath.Join(dir, "console.log"), done: make(chan struct{})}
	logf, err := os.Create(c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// --register=no --keep-unit: there is no system bus or machined here.
	c.cmd = exec.Command("systemd-nspawn", "-D", root, "--boot", "--register=no", "--keep-unit", "--console=pipe",
		"--machine="+fmt.Sprintf("sockshim-test-%d-%d", os.Getpid(), containers.Add(1)))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("testenv: systemd-nspawn: %v", err)
	}
	go func() {
		c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(c.logPath)
			t.Logf("container console:\n%s", tail(string(b), 80))
		}
		c.cmd.Process.Signal(syscall.SIGTERM) // nspawn halts the container
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			t.Errorf("testenv: container did not halt within 20s; killing it")
			for _, p := range append(Descendants(c.cmd.Process.Pid), c.cmd.Process.Pid) {
				syscall.Kill(p, syscall.SIGKILL)
			}
			<-c.done
		}
	})

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-c.done:
			b, _ := os.ReadFile(c.logPath)
			t.Fatalf("testenv: container exited during boot:\n%s", tail(string(b), 40))
		default:
		}
		if c.InitPID == 0 {
			if kids := children(c.cmd.Process.Pid); len(kids) > 0 {
				c.InitPID = kids[0]
			}
		}
		if c.InitPID != 0 {
			out, _ := c.Exec("systemctl", "is-system-running")
			if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
				return c
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(c.logPath)
			t.Fatalf("testenv: container not up within 60s:\n%s", tail(string(b), 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func children(pid int) []int {
	var out []int
	for p, pp := range parents() {
		if pp == pid {
			out = append(out, p)
		}
	}
	return out
}

// Exec runs a command inside the container (all its namespaces) and returns
// the combined output; a non-zero exit is an error carrying the output.
func (c *Container) Exec(args ...string) (string, error) {
	out, err := nsenter(c.InitPID, "-a", []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}, args)
	if err != nil {
		return out, fmt.Errorf("in container: %w", err)
	}
	return out, nil
}

// MustExec is Exec that fails the test on error.
func (c *Container) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// WriteFile writes a file inside the container.
func (c *Container) WriteFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(c.Root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
}

// CopyIn copies a host file into the container.
func (c *Container) CopyIn(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteFile(t, dst, b, mode)
}

// SystemdVersion is the major version of the container's systemd, from
// `systemctl --version` ("systemd 257 (257.13-1~deb13u1)").
func (c *Container) SystemdVersion(t testing.TB) int {
	t.Helper()
	out := c.MustExec(t, "systemctl", "--version")
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "systemd" {
		t.Fatalf("testenv: systemctl --version: %q", out)
	}
	v, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("testenv: systemctl --version: %q: %v", out, err)
	}
	return v
}
