// Package hello is the example worker behind `sockshim example-worker`: an
// HTTP server that takes its sockets the systemd way, says READY=1 when it
// serves, and drains without losing a request on SIGTERM. It is what a worker
// needs, and nothing else; copy it as a starting point.
package hello

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sockshim/sockshim/examples/gracefulhttp"
)

// Main runs the worker with command-line args (without the program name).
func Main(args []string) error {
	fs := flag.NewFlagSet("example-worker", flag.ContinueOnError)
	greeting := fs.String("greeting", "hello", "what to answer")
	drainTimeout := fs.Duration("drain-timeout", 25*time.Second, "longest time to finish in-flight requests on SIGTERM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid())

	// Listeners wraps the inherited sockets (LISTEN_FDS) and clears the
	// LISTEN_* variables so a child of ours does not mistake them for its own.
	lns, err := activation.Listeners()
	if err != nil {
		return fmt.Errorf("inherited sockets: %w", err)
	}
	lns = nonNil(lns)
	if len(lns) == 0 {
		return errors.New("no listening sockets passed (run me under sockshim or a systemd .socket unit)")
	}

	gen, id := os.Getenv("SOCKSHIM_GENERATION"), os.Getenv("SOCKSHIM_WORKER_ID")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from worker %s of generation %s (pid %d)\n", *greeting, id, gen, os.Getpid())
	})
	srv := gracefulhttp.New(&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second})

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	srv.Serve(lns)
	// READY=1 only now that every listener is being served.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY=1 failed", "err", err)
	}
	log.Info("serving", "generation", gen, "worker", id, "sockets", len(lns))

	var failed error
	select {
	case sig := <-stop:
		log.Info("draining", "signal", sig, "open_connections", srv.Open())
	case failed = <-srv.Failed():
		log.Error("draining, to be replaced", "err", failed, "open_connections", srv.Open())
	}
	ctx, cancel := context.WithTimeout(context.Background(), *drainTimeout)
	defer cancel()
	if err := srv.Drain(ctx); err != nil {
		return err
	}
	log.Info("drained")
	return failed
}

// nonNil drops the nil entries activation.Listeners returns for sockets that
// are not stream listeners (a UDP socket, say).
func nonNil(lns []net.Listener) []net.Listener {
	var out []net.Listener
	for _, l := range lns {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}
