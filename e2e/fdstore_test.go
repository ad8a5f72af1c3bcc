package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/testenv"
	"github.com/sockshim/sockshim/testenv/load"
)

// TestFDStoreSupervisorKill: SIGKILL of a sockshim that binds its own
// [[listen]] socket (no .socket unit), under load, with the shipped unit's
// Restart=, RestartSec=, KillMode=, TimeoutStopSec= and
// FileDescriptorStoreMax=. With the store, systemd holds the socket while no
// sockshim runs, and the next one takes it back: no connection is refused.
// Without it (FileDescriptorStoreMax=0), the socket closes with the last old
// worker and connections are refused until the new sockshim binds again.
// A socket the config no longer has leaves the store at the restart.
func TestFDStoreSupervisorKill(t *testing.T) {
	b := build(t)
	m := testenv.StartUserManager(t)
	shipped := shippedSettings(t)
	for _, c := range []struct {
		name     string
		storeMax string
	}{{"store", shipped["FileDescriptorStoreMax"]}, {"no store", "0"}} {
		t.Run(c.name, func(t *testing.T) {
			name := fmt.Sprintf("fds%d", testenv.FreePort(t))
			a := newApp(t, b, name)
			a.m = m
			gone := testenv.FreePort(t)
			listen := func(extra string) string {
				return fmt.Sprintf("[[listen]]\nname = \"http\"\naddress = \"tcp://127.0.0.1:%d\"\n%s", a.port, extra)
			}
			a.listen = listen(fmt.Sprintf("[[listen]]\nname = \"gone\"\naddress = \"tcp://127.0.0.1:%d\"\n", gone))
			workers := workerConfig(b, "v1", "rolling", 1, 2, "-work", "2ms")
			a.rewrite(t, workers)
			writeService(t, m, b, name, a.cfgPath, "")
			var dropIn strings.Builder
			dropIn.WriteString("[Service]\n")
			for _, k := range []string{"Restart", "RestartSec", "KillMode", "TimeoutStopSec"} {
				fmt.Fprintf(&dropIn, "%s=%s\n", k, shipped[k])
			}
			fmt.Fprintf(&dropIn, "FileDescriptorStoreMax=%s\n", c.storeMax)
			m.WriteUnit(t, name+".service.d/shipped.conf", dropIn.String())
			m.MustSystemctl(t, "start", name+".service")
			m.WaitActive(t, name+".service", a.upWithin(t))
			stored := func() string { return m.Show(t, name+".service", "NFileDescriptorStore") }
			want := "2"
			if c.storeMax == "0" {
				want = "0"
			}
			if n := stored(); n != want {
				t.Fatalf("NFileDescriptorStore=%s after the start, want %s", n, want)
			}
			// The next start's config has no "gone".
			a.listen = listen("")
			a.rewrite(t, workers)

			oldMain := m.MainPID(t, name+".service")
			res := underLoad(t, load.Options{URL: a.url, Concurrency: 8}, func() {
				if err := syscall.Kill(oldMain, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				waitFor(t, 2*time.Minute, "a new sockshim serving", func() bool {
					p, err := strconv.Atoi(m.Show(t, name+".service", "MainPID"))
					if err != nil || p == 0 || p == oldMain {
						return false
					}
					_, err = m.Systemctl("is-active", name+".service")
					return err == nil
				})
				get(t, a.url)
			})
			t.Logf("%s: sockshim killed under load: %s; NRestarts=%s; NFileDescriptorStore=%s", c.name, res, m.Show(t, name+".service", "NRestarts"), stored())
			refused := res.Failures["refused"]
			if c.storeMax == "0" {
				// The contrast shows that the load would see a closed socket.
				if refused == 0 {
					t.Errorf("without the fd store no connection was refused: the test cannot tell a kept socket from a closed one")
				}
			} else {
				if refused != 0 {
					t.Errorf("%d connections refused with the fd store: the socket must wait in systemd's store", refused)
				}
				if n := stored(); n != "1" {
					t.Errorf("NFileDescriptorStore=%s after the restart, want 1: the socket the config dropped must leave the store", n)
				}
				log := m.Log()
				for _, want := range []string{"listening on a socket passed by the service manager", "has no [[listen]] entry: closed, and removed from the fd store"} {
					if !strings.Contains(log, want) {
						t.Errorf("the log lacks %q", want)
					}
				}
			}
			if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", gone), time.Second); err == nil {
				c.Close()
				t.Errorf("port %d of the dropped [[listen]] entry still accepts after the restart", gone)
			}
			m.MustSystemctl(t, "stop", name+".service")
		})
	}
}
