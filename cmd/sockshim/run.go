package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/internal/contain"
	"github.com/sockshim/sockshim/shim"
	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/control"
	"github.com/sockshim/sockshim/shim/fdstore"
	"github.com/sockshim/sockshim/shim/metrics"
	"github.com/sockshim/sockshim/shim/sockets"
)

//go:embed default.toml
var defaultTOML []byte

// defaultName is the embedded config's file name: it names the supervisor
// `sockshim run` starts without -c, and so its control socket, which
// `sockshim status` and `sockshim reload` without -c find by the same name.
const defaultName = "default.toml"

func cmdRun(args []string, stderr io.Writer) error {
	// The supervisor's work is one loop plus goroutines that mostly wait;
	// a second P buys it nothing but thread wake-ups and hand-offs on cores
	// that belong to the workers. One P cut its CPU time per reload by about
	// a third (BENCHMARKS.md). Set here, not through GOMAXPROCS in the environment,
	// which the workers inherit.
	runtime.GOMAXPROCS(1)
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config `file` (default: the embedded example)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "sockshim run: unexpected argument %q\n", fs.Arg(0))
		}
		return errUsage
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	cfg, err := loadOrDefault(*path)
	if err != nil {
		return err
	}
	// The control socket first: holding it proves no other supervisor of
	// this instance lives, so whatever carries its mark is left over.
	ctlPath := control.SocketPath(cfg.Path, cfg.Control.Socket)
	ctl, err := control.Listen(ctlPath, log)
	if err != nil {
		return err
	}
	defer ctl.Close()
	// An earlier life killed with SIGKILL may have left processes that
	// still hold its sockets (the port, for [[listen]]): stop them before
	// binding, or the bind fails and they serve old code.
	left, err := contain.KillLeftovers(log, ctlPath, 5*time.Second)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("processes an earlier sockshim of %s left behind survived SIGKILL for 5s: %v", ctlPath, left)
	}
	socks, err := openSockets(cfg, log)
	if err != nil {
		return err
	}
	sup, err := shim.New(shim.Options{Config: cfg, Sockets: socks, Logger: log, LoadConfig: reloader(*path, cfg), Instance: ctlPath})
	if err != nil {
		return err
	}
	if cfg.Metrics.Listen != "" {
		ms, err := metrics.Listen(cfg.Metrics)
		if err != nil {
			return err
		}
		defer ms.Close()
		go func() {
			if err := ms.Serve(sup.Status, log); err != nil {
				log.Error("metrics endpoint stopped", "err", err)
			}
		}()
	}
	go ctl.Serve(sup)
	go forwardSignals(sup, log)
	return sup.Run()
}

// reloader re-reads the config file on every reload; the embedded default
// has no file and reloads as it is.
func reloader(path string, cfg *config.Config) func() (*config.Config, error) {
	if path == "" {
		return func() (*config.Config, error) { return cfg, nil }
	}
	return func() (*config.Config, error) { return config.Load(path) }
}

func loadOrDefault(path string) (*config.Config, error) {
	if path != "" {
		return config.Load(path)
	}
	cfg, err := config.Parse(defaultName, defaultTOML)
	if err != nil {
		return nil, err
	}
	// The example worker is built into this binary, wherever it lives.
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("locating sockshim's own binary: %w", err)
	}
	for i := range cfg.Workers {
		cfg.Workers[i].Command[0] = exe
	}
	return cfg, nil
}

// openSockets takes the sockets passed by the service manager for a config
// without [[listen]] entries (a .socket unit's), and otherwise opens the
// entries' sockets, from the manager's fd store where it kept them
// (sockets.Open).
func openSockets(cfg *config.Config, log *slog.Logger) ([]handoff.Socket, error) {
	socks, err := sockets.Inherit()
	if err != nil {
		return nil, err
	}
	if len(cfg.Listen) > 0 {
		socks, err = sockets.Open(cfg.Listen, socks, fdstore.FromEnv(), log)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Path, err)
		}
		return socks, nil
	}
	if len(socks) == 0 {
		return nil, fmt.Errorf("%s: no sockets: the config has no [[listen]] entries and the service manager passed none (is the .socket unit enabled?)", cfg.Path)
	}
	log.Info("using sockets passed by the service manager", "count", len(socks), "names", sockets.Names(socks))
	return socks, nil
}

// forwardSignals turns signals into supervisor requests: the first SIGTERM or
// SIGINT drains, a second one kills.
func forwardSignals(sup *shim.Supervisor, log *slog.Logger) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	stops := 0
	for sig := range ch {
		switch sig {
		case syscall.SIGHUP:
			log.Info("signal received", "signal", sig, "action", "reload")
			go func() {
				// The outcome is logged by the supervisor itself.
				_, _ = sup.Reload(context.Background(), nil)
			}()
		default:
			stops++
			log.Info("signal received", "signal", sig, "force", stops > 1)
			sup.Stop(stops > 1)
		}
	}
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if os.Getenv("JOURNAL_STREAM") != "" {
		// journald stamps every line itself.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
