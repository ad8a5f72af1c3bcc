package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// packages are a .deb and an .rpm built by scripts/package.sh.
type packages struct{ deb, rpm, dir string }

var (
	pkgMu    sync.Mutex
	pkgBuilt = map[string]packages{}
)

// buildPackages runs the project's one packaging command for version.
func buildPackages(t *testing.T, version string) packages {
	t.Helper()
	pkgMu.Lock()
	defer pkgMu.Unlock()
	if p, ok := pkgBuilt[version]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "sockshim-pkg-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("./scripts/package.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "DIST="+dir, "SOCKSHIM_VERSION="+version)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/package.sh: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(dir, "*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("package.sh made %v and %v", debs, rpms)
	}
	p := packages{deb: debs[0], rpm: rpms[0], dir: dir}
	pkgBuilt[version] = p
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPackagesLint: lintian and rpmlint are quiet, the units verify, and the
// .rpm ships the same files and maintainer scripts as the .deb.
func TestPackagesLint(t *testing.T) {
	p := buildPackages(t, "0.1.0~test1")
	for _, info := range []os.FileInfo{stat(t, p.deb), stat(t, p.rpm)} {
		t.Logf("%s: %d bytes", info.Name(), info.Size())
	}

	if out := run(t, "lintian", "--allow-root", "--fail-on", "error,warning,info", p.deb); strings.TrimSpace(out) != "" {
		t.Errorf("lintian is not quiet:\n%s", out)
	}
	// rpmlint unpacks with cpio relative to the cwd; as root that could write
	// into /. It runs as nobody in a scratch dir, as FACTS.md advises.
	scratch, err := os.MkdirTemp("", "sockshim-rpmlint-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(scratch)
	os.Chmod(scratch, 0o777)
	rpm := filepath.Join(scratch, filepath.Base(p.rpm))
	copyFile(t, p.rpm, rpm)
	copyFile(t, "../packaging/rpmlint.toml", filepath.Join(scratch, "rpmlint.toml"))
	cmd := exec.Command("runuser", "-u", "nobody", "--", "env", "HOME="+scratch, "rpmlint", "-c", "rpmlint.toml", filepath.Base(rpm))
	cmd.Dir = scratch
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "0 errors, 0 warnings") {
		t.Errorf("rpmlint: %v\n%s", err, out)
	}

	// systemd-analyze verify on the installed layout: the units as shipped,
	// pointing at the shipped binary, with the shipped man pages on MANPATH
	// so that Documentation=man: is checked too.
	root := t.TempDir()
	run(t, "dpkg-deb", "-x", p.deb, root)
	units := t.TempDir()
	for _, u := range []string{"usr/lib/systemd/system/sockshim@.service", "usr/lib/systemd/system/sockshim@.socket",
		"usr/share/doc/sockshim/examples/myapp.socket", "usr/share/doc/sockshim/examples/myapp.service"} {
		b, err := os.ReadFile(filepath.Join(root, u))
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.ReplaceAll(string(b), "/usr/bin/sockshim", filepath.Join(root, "usr/bin/sockshim")))
		if err := os.WriteFile(filepath.Join(units, filepath.Base(u)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The socket template has no address of its own; an instance gets one
	// from the drop-in the README tells users to write.
	dropIn := filepath.Join(units, "sockshim@demo.socket.d")
	os.Mkdir(dropIn, 0o755)
	if err := os.WriteFile(filepath.Join(dropIn, "listen.conf"), []byte("[Socket]\nListenStream=127.0.0.1:8080\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	verify := exec.Command("systemd-analyze", "verify", "sockshim@demo.socket", "sockshim@demo.service", "myapp.socket", "myapp.service")
	verify.Dir = units
	verify.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+units+":", "MANPATH="+filepath.Join(root, "usr/share/man"))
	if out, err := verify.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	} else if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("systemd-analyze verify is not quiet:\n%s", s)
	}

	debFiles := debContents(t, p.deb)
	rpmFiles := strings.Fields(run(t, "rpm", "-qlp", p.rpm))
	// Where the formats differ by convention: the license file's place and
	// Debian's lintian overrides.
	debOnly := []string{"/usr/share/doc/sockshim/copyright", "/usr/share/lintian/overrides/sockshim", "/usr/share/doc/sockshim/changelog.Debian.gz"}
	rpmOnly := []string{"/usr/share/licenses/sockshim/LICENSE"}
	for _, f := range debFiles {
		if !slices.Contains(rpmFiles, f) && !slices.Contains(debOnly, f) {
			t.Errorf("%s is in the .deb but not the .rpm", f)
		}
	}
	for _, f := range rpmFiles {
		if !slices.Contains(debFiles, f) && !slices.Contains(rpmOnly, f) && !strings.HasPrefix(f, "/etc/sockshim") && f != "/usr/share/doc/sockshim" {
			t.Errorf("%s is in the .rpm but not the .deb", f)
		}
	}
	if !slices.Contains(rpmFiles, "/etc/sockshim/example.toml") {
		t.Errorf("the .rpm lacks /etc/sockshim/example.toml")
	}
	scripts := run(t, "rpm", "-qp", "--scripts", p.rpm)
	for _, name := range []string{"postinst.sh", "prerm.sh", "postrm.sh"} {
		body, _ := os.ReadFile("../packaging/scripts/" + name)
		first := strings.Split(strings.TrimSpace(string(body)), "\n")[1]
		if !strings.Contains(scripts, first) {
			t.Errorf("rpm scriptlets lack %s (%q)", name, first)
		}
	}
	conffiles := run(t, "sh", "-c", "dpkg-deb --ctrl-tarfile "+p.deb+" | tar -xO ./conffiles")
	if strings.TrimSpace(conffiles) != "/etc/sockshim/example.toml" {
		t.Errorf("deb conffiles %q, want /etc/sockshim/example.toml", conffiles)
	}
	if cfg := run(t, "rpm", "-qpc", p.rpm); strings.TrimSpace(cfg) != "/etc/sockshim/example.toml" {
		t.Errorf("rpm config files %q", cfg)
	}
}

func debContents(t *testing.T, deb string) []string {
	var files []string
	for _, line := range strings.Split(run(t, "dpkg-deb", "-c", deb), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || strings.HasPrefix(f[0], "d") {
			continue
		}
		files = append(files, strings.TrimPrefix(f[5], "."))
	}
	return files
}

func stat(t *testing.T, path string) os.FileInfo {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func copyFile(t *testing.T, src, dst string) {
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// installReloads is how many reloads the install test does under load.
var installReloads = envInt("SOCKSHIM_E2E_INSTALL_RELOADS", 50)

// TestPackageInstall follows a user through a real Debian 12 system booted
// with systemd-nspawn: install the .deb, configure a socket-activated
// instance, reload under load, fail a reload, upgrade under load, purge.
func TestPackageInstall(t *testing.T) {
	v1 := buildPackages(t, "0.1.0~test1")
	v2 := buildPackages(t, "0.1.0~test2")
	c := testenv.BootContainer(t, testenv.DebianRoot(t))

	// The worker: the testworker, static, so it needs nothing from the root.
	tw := filepath.Join(t.TempDir(), "testworker")
	build := exec.Command("go", "build", "-o", tw, "github.com/sockshim/sockshim/testenv/testworker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the testworker: %v\n%s", err, out)
	}
	c.CopyIn(t, tw, "/usr/local/bin/testworker", 0o755)
	c.CopyIn(t, v1.deb, "/root/"+filepath.Base(v1.deb), 0o644)
	c.CopyIn(t, v2.deb, "/root/"+filepath.Base(v2.deb), 0o644)

	// 1. Install.
	before := listFiles(t, c.Root)
	c.MustExec(t, "apt-get", "install", "-y", "/root/"+filepath.Base(v1.deb))
	if out := c.MustExec(t, "sockshim", "version"); !strings.Contains(out, "0.1.0~test1") {
		t.Errorf("sockshim version: %s", out)
	}
	// The installed template is as sandboxed as its comments say.
	if score, level := exposure(t, c, "sockshim@tw.service"); score > maxExposure {
		t.Errorf("systemd-analyze security: sockshim@tw.service exposure %.1f %s, want at most %.1f", score, level, maxExposure)
	} else {
		t.Logf("systemd-analyze security: sockshim@tw.service exposure %.1f %s", score, level)
	}

	// 2. Configure a socket-activated instance.
	port := testenv.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	cfg := func(version string, extra ...string) []byte {
		args := append([]string{"/usr/local/bin/testworker", "-version", version}, extra...)
		return []byte(fmt.Sprintf("[[worker]]\nname = \"tw\"\ncommand = %s\ncount = 2\nready_timeout = \"10s\"\ndrain_timeout = \"10s\"\n", tomlList(args...)))
	}
	c.WriteFile(t, "/etc/sockshim/tw.toml", cfg("v1"), 0o644)
	c.WriteFile(t, "/etc/systemd/system/sockshim@tw.socket.d/listen.conf",
		[]byte(fmt.Sprintf("[Socket]\nListenStream=127.0.0.1:%d\n", port)), 0o644)
	c.MustExec(t, "systemctl", "daemon-reload")
	c.MustExec(t, "systemctl", "enable", "--now", "sockshim@tw.socket")
	if state, _ := c.Exec("systemctl", "is-active", "sockshim@tw.service"); strings.TrimSpace(state) != "inactive" {
		t.Errorf("service %q before the first request, want inactive", strings.TrimSpace(state))
	}
	if got := get(t, url); got.generation != "1" || got.version != "v1" {
		t.Fatalf("first answer %+v", got)
	}

	loadRun := func(what string, f func()) *load.Result {
		res := underLoad(t, load.Options{URL: url, Concurrency: 16}, f)
		t.Logf("%s: %s", what, res)
		if res.Failed() != 0 {
			t.Errorf("%s: %d failed requests: %v %v", what, res.Failed(), res.Failures, res.Examples)
		}
		return res
	}

	// 3. Reloads under load.
	gen := 1
	loadRun(fmt.Sprintf("%d reloads", installReloads), func() {
		for range installReloads {
			c.MustExec(t, "systemctl", "reload", "sockshim@tw.service")
			gen++
		}
	})
	if got := get(t, url); got.generation != fmt.Sprint(gen) {
		t.Errorf("after %d reloads generation %s, want %d", installReloads, got.generation, gen)
	}

	// 4. A failed reload fails `systemctl reload`; the old generation serves.
	c.WriteFile(t, "/etc/sockshim/tw.toml", cfg("v2", "-exit-before-ready"), 0o644)
	loadRun("failed reload", func() {
		if out, err := c.Exec("systemctl", "reload", "sockshim@tw.service"); err == nil {
			t.Errorf("systemctl reload succeeded with a crashing worker:\n%s", out)
		}
	})
	gen++ // the failed attempt used a generation number
	if got := get(t, url); got.version != "v1" {
		t.Errorf("after the failed reload: version %s, want v1", got.version)
	}
	if state, _ := c.Exec("systemctl", "is-active", "sockshim@tw.service"); strings.TrimSpace(state) != "active" {
		t.Errorf("after the failed reload the service is %s", state)
	}
	c.WriteFile(t, "/etc/sockshim/tw.toml", cfg("v1"), 0o644)

	// 5. Upgrade under load: the instance reloads, nothing fails.
	loadRun("package upgrade", func() {
		c.MustExec(t, "apt-get", "install", "-y", "/root/"+filepath.Base(v2.deb))
	})
	gen++
	if got := get(t, url); got.generation != fmt.Sprint(gen) {
		t.Errorf("after the upgrade generation %s, want %d (the instance was not reloaded?)", got.generation, gen)
	}
	if out := c.MustExec(t, "sockshim", "version"); !strings.Contains(out, "0.1.0~test2") {
		t.Errorf("after upgrade, sockshim version: %s", out)
	}

	// 6. A worker with user = "nobody": under the sandbox it starts, drops
	// privileges, serves and reloads under load.
	nobodyPort := testenv.FreePort(t)
	nobodyURL := fmt.Sprintf("http://127.0.0.1:%d/", nobodyPort)
	nobodyCfg := func(version string, extra ...string) []byte {
		args := append([]string{"/usr/local/bin/testworker", "-version", version}, extra...)
		return []byte(fmt.Sprintf("[[worker]]\nname = \"tw\"\ncommand = %s\ncount = 2\nuser = \"nobody\"\nready_timeout = \"10s\"\ndrain_timeout = \"30s\"\n", tomlList(args...)))
	}
	// The first generation keeps its sockets on SIGTERM, so that the reload
	// below must see them in the /proc/PID/fd of workers of another user.
	c.WriteFile(t, "/etc/sockshim/nobody.toml", nobodyCfg("n1", "-ignore-sigterm"), 0o644)
	c.WriteFile(t, "/etc/systemd/system/sockshim@nobody.socket.d/listen.conf",
		[]byte(fmt.Sprintf("[Socket]\nListenStream=127.0.0.1:%d\n", nobodyPort)), 0o644)
	c.MustExec(t, "systemctl", "daemon-reload")
	c.MustExec(t, "systemctl", "enable", "--now", "sockshim@nobody.socket")
	first := get(t, nobodyURL)
	if first.version != "n1" {
		t.Fatalf("user = nobody: first answer %+v", first)
	}
	uids := func(pid string) string {
		t.Helper()
		for _, line := range strings.Split(c.MustExec(t, "cat", "/proc/"+pid+"/status"), "\n") {
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				return strings.Join(strings.Fields(v), " ")
			}
		}
		t.Fatalf("no Uid: line in /proc/%s/status", pid)
		return ""
	}
	if got := uids(first.pid); got != "65534 65534 65534 65534" {
		t.Errorf("worker %s runs with uids %s, want nobody's (65534)", first.pid, got)
	}
	// `sockshim reload` rather than `systemctl reload`, for the answer's text.
	c.WriteFile(t, "/etc/sockshim/nobody.toml", nobodyCfg("n2"), 0o644)
	out := c.MustExec(t, "sockshim", "reload", "-c", "/etc/sockshim/nobody.toml")
	var held []string
	if m := regexp.MustCompile(`draining pids \[([0-9 ]+)\] still hold the listening sockets`).FindStringSubmatch(out); m != nil {
		held = strings.Fields(m[1])
	}
	if !slices.Contains(held, first.pid) {
		t.Errorf("the reload did not name worker %s, which kept its sockets (can sockshim read /proc/PID/fd of another user?):\n%s", first.pid, out)
	}
	// They would accept until their drain_timeout: end them now.
	for _, pid := range held {
		c.MustExec(t, "sh", "-c", "kill -KILL "+pid)
		waitFor(t, 10*time.Second, "SIGKILLed worker "+pid+" to exit", func() bool {
			st, err := c.Exec("cat", "/proc/"+pid+"/stat")
			return err != nil || strings.Contains(st, ") Z ")
		})
	}
	nobodyGen := 2
	res := underLoad(t, load.Options{URL: nobodyURL, Concurrency: 16}, func() {
		for range 10 {
			c.MustExec(t, "systemctl", "reload", "sockshim@nobody.service")
			nobodyGen++
		}
	})
	t.Logf("10 reloads, user = nobody: %s", res)
	if res.Failed() != 0 {
		t.Errorf("10 reloads, user = nobody: %d failed requests: %v %v", res.Failed(), res.Failures, res.Examples)
	}
	last := get(t, nobodyURL)
	if last.generation != fmt.Sprint(nobodyGen) || last.version != "n2" {
		t.Errorf("after 10 reloads, user = nobody: %+v, want version n2, generation %d", last, nobodyGen)
	}
	if got := uids(last.pid); got != "65534 65534 65534 65534" {
		t.Errorf("reloaded worker %s runs with uids %s, want nobody's (65534)", last.pid, got)
	}

	// 7. Purge leaves nothing but the admin's own files.
	c.MustExec(t, "apt-get", "purge", "-y", "sockshim")
	after := listFiles(t, c.Root)
	admin := []string{"/etc/sockshim", "/etc/sockshim/tw.toml", "/etc/systemd/system/sockshim@tw.socket.d", "/etc/systemd/system/sockshim@tw.socket.d/listen.conf",
		"/etc/sockshim/nobody.toml", "/etc/systemd/system/sockshim@nobody.socket.d", "/etc/systemd/system/sockshim@nobody.socket.d/listen.conf"}
	for _, f := range after {
		if slices.Contains(before, f) || slices.Contains(admin, f) || ephemeral(f) {
			continue
		}
		t.Errorf("left behind after purge: %s", f)
	}
}

// maxExposure is the exposure systemd 252's `systemd-analyze security` gives
// the sockshim@.service template (257 agrees); a unit change that loosens the
// sandbox has to raise it here and say why in the unit.
const maxExposure = 4.6

var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+\.[0-9]) (\S+)`)

// exposure is `systemd-analyze security --offline=true` of unit inside c: its
// overall exposure (0 = sealed, 10 = exposed) and the level's name.
func exposure(t *testing.T, c *testenv.Container, unit string) (float64, string) {
	t.Helper()
	out, err := c.Exec("systemd-analyze", "security", "--offline=true", unit)
	m := exposureLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security %s: no overall exposure (%v):\n%s", unit, err, out)
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	return score, m[2]
}

// TestPackageChroot: where no systemd runs (a chroot, an image build), the
// maintainer scripts install, upgrade and purge without error and start
// nothing.
func TestPackageChroot(t *testing.T) {
	v1 := buildPackages(t, "0.1.0~test1")
	v2 := buildPackages(t, "0.1.0~test2")
	_, root := testenv.ScratchRoot(t, testenv.DebianRoot(t))
	apt := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("chroot", append([]string{root, "/usr/bin/env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
			"DEBIAN_FRONTEND=noninteractive", "apt-get", "-y"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("apt-get %v in a chroot: %v\n%s", args, err, out)
		}
		for _, bad := range []string{"System has not been booted", "Failed to connect to bus", "sockshim:"} {
			if strings.Contains(string(out), bad) {
				t.Errorf("apt-get %v in a chroot said %q:\n%s", args, bad, out)
			}
		}
		return string(out)
	}
	for _, p := range []packages{v1, v2} {
		copyFile(t, p.deb, filepath.Join(root, "root", filepath.Base(p.deb)))
	}
	apt("install", "/root/"+filepath.Base(v1.deb))
	apt("install", "/root/"+filepath.Base(v2.deb)) // an upgrade: postinst would reload instances
	if _, err := os.Stat(filepath.Join(root, "usr/bin/sockshim")); err != nil {
		t.Errorf("not installed: %v", err)
	}
	// Nothing may run from the chroot: no sockshim was started.
	exe := filepath.Join(root, "usr/bin/sockshim")
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if target, _ := os.Readlink(p); strings.HasPrefix(target, exe) {
			t.Errorf("%s runs %s", p, target)
		}
	}
	apt("purge", "sockshim")
	if _, err := os.Stat(exe); err == nil {
		t.Errorf("%s left after purge", exe)
	}
}

// listFiles lists every path under root except the volatile trees.
func listFiles(t *testing.T, root string) []string {
	var out []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel := strings.TrimPrefix(p, root)
		for _, skip := range []string{"/proc", "/sys", "/dev", "/run", "/tmp", "/var/log", "/var/cache", "/var/lib/apt", "/var/lib/dpkg", "/var/lib/systemd", "/root"} {
			if rel == skip || strings.HasPrefix(rel, skip+"/") {
				if fi.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		out = append(out, rel)
		return nil
	})
	return out
}

// ephemeral are paths the system itself creates as it runs.
func ephemeral(p string) bool {
	for _, prefix := range []string{"/var/tmp", "/etc/machine-id", "/etc/.pwd.lock", "/etc/ld.so.cache", "/var/lib/man-db"} {
		if p == prefix || strings.HasPrefix(p, prefix+"/") {
			return true
		}
	}
	// The directory `systemctl enable` made; what it held must be gone.
	return p == "/etc/systemd/system/sockets.target.wants"
}
