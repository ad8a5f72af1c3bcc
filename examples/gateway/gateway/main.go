// Command gateway holds the WebSocket clients of the gateway example and is
// never reloaded (reloadable = false). It takes two sockets by name from
// sockshim or systemd: "public", where it accepts WebSocket clients (and
// answers GET /stats), and "internal", the business group's socket, which it
// never accepts on: it only learns its address (getsockname) and dials it.
// Every client message is answered by the business group through a Pool of
// backend connections that survives the business group's reloads.
//
// Signals: SIGHUP (sockshim's reload_signal) makes the pool close its
// connections as they become idle, so new ones reach the new generation;
// SIGTERM or SIGINT closes every client with 1001 (going away) once its
// answers are written, and exits.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sockshim/sockshim/examples/gateway/front"
	"github.com/sockshim/sockshim/examples/gateway/sockets"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("gateway", os.Getpid())
	if err := run(log); err != nil {
		log.Error("gateway", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	publicName := flag.String("public", "public", "name (LISTEN_FDNAMES) of the socket to accept WebSocket clients on")
	internalName := flag.String("internal", "internal", "name of the business group's socket, dialled, never accepted on")
	conns := flag.Int("backend-conns", 8, "connections to the business group")
	requestTimeout := flag.Duration("request-timeout", 10*time.Second, "longest time to get a message answered; then the client gets an error answer")
	attemptTimeout := flag.Duration("attempt-timeout", 3*time.Second, "an attempt without an answer this long is sent again on another connection")
	drainTimeout := flag.Duration("drain-timeout", 5*time.Second, "on SIGTERM, longest wait for answers in flight before the clients are closed")
	flag.Parse()

	socks := sockets.Take()
	pf, ok := socks[*publicName]
	if !ok {
		return fmt.Errorf("no socket named %q passed (LISTEN_FDNAMES); run me under sockshim or a .socket unit", *publicName)
	}
	inf, ok := socks[*internalName]
	if !ok {
		return fmt.Errorf("no socket named %q passed (LISTEN_FDNAMES)", *internalName)
	}
	network, address, err := sockets.DialAddr(inf)
	if err != nil {
		return err
	}
	// sockshim (or systemd) keeps the internal socket open; this process
	// only needed its address.
	inf.Close()
	public, err := sockets.Listener(pf)
	if err != nil {
		return err
	}

	g := &gateway{pool: &Pool{Network: network, Address: address, Size: *conns, AttemptTimeout: *attemptTimeout, Log: log}}
	g.front = &front.Front{Log: log, Answer: func(ctx context.Context, payload []byte) (string, []byte, error) {
		ctx, cancel := context.WithTimeout(ctx, *requestTimeout)
		defer cancel()
		a, err := g.pool.Do(ctx, payload)
		if err != nil {
			return "", nil, err
		}
		return a.Version, a.Result, a.Err()
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", g.stats)
	mux.Handle("/", g.front)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(public) }()
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY=1", "err", err)
	}
	log.Info("serving", "public", public.Addr().String(), "business", network+":"+address)

	for {
		select {
		case err := <-served:
			return fmt.Errorf("serve %s: %w", public.Addr(), err)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				g.reloads.Add(1)
				n := g.pool.Retire()
				log.Info("reload signal: backend connections retired", "retired", n, "reload_signals", g.reloads.Load())
				continue
			}
			log.Info("stopping", "signal", sig, "clients", g.front.Stats().Clients)
			// Close only the listener: hijacked WebSocket connections
			// are the Front's to close.
			if err := public.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Warn("close public socket", "err", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), *drainTimeout)
			g.front.CloseAll(ctx, "gateway shutting down")
			cancel()
			g.pool.Close()
			log.Info("stopped")
			return nil
		}
	}
}

type gateway struct {
	front   *front.Front
	pool    *Pool
	reloads atomic.Int64 // SIGHUPs received
}

// Stats is what GET /stats answers.
type Stats struct {
	PID           int   `json:"pid"`
	ReloadSignals int64 `json:"reload_signals"`
	front.Stats
	PoolStats
}

func (g *gateway) stats(w http.ResponseWriter, r *http.Request) {
	s := Stats{PID: os.Getpid(), ReloadSignals: g.reloads.Load(), Stats: g.front.Stats(), PoolStats: g.pool.Stats()}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s)
}
