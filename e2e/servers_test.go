package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// serverReloads is how many reloads each third-party server gets under load.
var serverReloads = envInt("SOCKSHIM_E2E_SERVER_RELOADS", 20)

// exampleConfig reads an example config from examples/ with its paths
// replaced for the test.
func exampleConfig(t *testing.T, name string, replace ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(replace...).Replace(string(b))
}

func needProgram(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s not found: apt-get install %s (scripts/test.sh does)", path, pkg)
	}
}

// reloadUnderLoad runs the load client while doing n reloads through
// systemd; before each reload, prepare(i) may change what is on disk and
// after it, check(i) may look at the answers. It asserts zero failures.
func reloadUnderLoad(t *testing.T, m *testenv.Manager, a *app, unit string, n int, keepAlive bool, prepare, check func(i int)) *load.Result {
	t.Helper()
	res := underLoad(t, load.Options{URL: a.url, Concurrency: 8, KeepAlive: keepAlive}, func() {
		base := status(t, a.ctl).Generation
		for i := 1; i <= n; i++ {
			if prepare != nil {
				prepare(i)
			}
			if out, err := m.Systemctl("reload", unit+".service"); err != nil {
				t.Fatalf("reload %d: %v\n%s", i, err, out)
			}
			if st := status(t, a.ctl); st.Generation != base+i {
				t.Fatalf("reload %d: generation %d, want %d", i, st.Generation, base+i)
			}
			if check != nil {
				check(i)
			}
		}
	})
	t.Logf("%d reloads: %s", n, res)
	if res.Failed() != 0 {
		t.Errorf("%d failed requests during %d reloads: %v %v", res.Failed(), n, res.Failures, res.Examples)
	}
	return res
}

// TestGunicorn: gunicorn (Debian's package) as a sockshim worker. The app
// reads its version from a file when gunicorn's workers import it; changing
// the file and reloading serves the new version, with no failed request.
func TestGunicorn(t *testing.T) {
	needProgram(t, "/usr/bin/gunicorn", "gunicorn")
	b := build(t)
	m := testenv.StartUserManager(t)
	appDir := t.TempDir()
	for _, f := range []string{"app.py", "VERSION"} {
		copyFile(t, filepath.Join("..", "examples", "gunicorn", f), filepath.Join(appDir, f))
	}
	a := installApp(t, m, b, "gunicorn", exampleConfig(t, "gunicorn/gunicorn.toml", "/srv/myapp", appDir))
	if got := a.activate(t); got.version != "v1" || got.generation != "1" {
		t.Fatalf("first answer %+v", got)
	}
	res := reloadUnderLoad(t, m, a, "gunicorn", serverReloads, false,
		func(i int) {
			if err := os.WriteFile(filepath.Join(appDir, "VERSION"), []byte(fmt.Sprintf("v%d\n", i+1)), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		func(i int) {
			// A draining gunicorn worker may still take a connection it
			// was already waiting on (and answers it): the new version
			// must be what answers once the old one is gone.
			want := fmt.Sprintf("v%d", i+1)
			waitFor(t, 30*time.Second, "gunicorn to serve "+want, func() bool { return get(t, a.url).version == want })
		})
	final := fmt.Sprintf("v%d", serverReloads+1)
	if res.Versions[final] == 0 {
		t.Errorf("the load never saw %s: %v", final, res.Versions)
	}

	// A broken deploy: with --preload the import error stops the new
	// master before READY=1, so the reload fails and the running
	// generation keeps serving, without a failed request.
	good, err := os.ReadFile(filepath.Join(appDir, "app.py"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(appDir, "app.py"), append([]byte("import no_such_module\n"), good...), 0o644); err != nil {
		t.Fatal(err)
	}
	gen := status(t, a.ctl).Generation
	res = underLoad(t, load.Options{URL: a.url, Concurrency: 8}, func() {
		if out, err := m.Systemctl("reload", "gunicorn.service"); err == nil {
			t.Errorf("reload of an app that does not import succeeded:\n%s", out)
		}
	})
	t.Logf("broken deploy: %s", res)
	if res.Failed() != 0 || res.Versions[final] != res.OK {
		t.Errorf("during the broken deploy: %s, versions %v; want every answer from %s", res, res.Versions, final)
	}
	checkGeneration(t, a, gen, 1)
	if !strings.Contains(m.Log(), "no_such_module") {
		t.Errorf("gunicorn's import error is not in the unit's output")
	}
}

// TestLighttpd: lighttpd (Debian's package) with its systemd socket
// activation, drained with SIGINT, readiness by a short delay.
func TestLighttpd(t *testing.T) {
	needProgram(t, "/usr/sbin/lighttpd", "lighttpd")
	b := build(t)
	m := testenv.StartUserManager(t)
	docroot := t.TempDir()
	if err := os.WriteFile(filepath.Join(docroot, "index.txt"), []byte("hello from lighttpd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf, _ := filepath.Abs("../examples/lighttpd/lighttpd.conf")
	a := installApp(t, m, b, "lighttpd", exampleConfig(t, "lighttpd/lighttpd.toml",
		"/etc/sockshim/lighttpd.conf", conf, "/srv/www", docroot))
	a.activate(t)
	reloadUnderLoad(t, m, a, "lighttpd", serverReloads, false, nil, nil)
	reloadUnderLoad(t, m, a, "lighttpd", 5, true, nil, nil)
}

// TestFileListenerWorker: a Go worker with no systemd library, taking fd 3
// with net.FileListener and writing READY=1 itself.
func TestFileListenerWorker(t *testing.T) {
	b := build(t)
	bin := testenv.Build(t, "github.com/sockshim/sockshim/examples/filelistener")
	m := testenv.StartUserManager(t)
	body := func(v string) string {
		return fmt.Sprintf("[[worker]]\nname = \"fl\"\ncommand = %s\ncount = 2\nready_timeout = \"10s\"\n", tomlList(bin, "-version", v))
	}
	a := installApp(t, m, b, "fl", body("v1"))
	a.activate(t)
	reloadUnderLoad(t, m, a, "fl", serverReloads, false,
		func(i int) { a.rewrite(t, body(fmt.Sprintf("v%d", i+1))) },
		func(i int) {
			if got := get(t, a.url); got.version != fmt.Sprintf("v%d", i+1) {
				t.Fatalf("reload %d: version %q", i, got.version)
			}
		})
}
