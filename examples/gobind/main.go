// Command gobind is an HTTP server that binds its own port with net.Listen
// and knows nothing of socket activation, as most Go servers are written.
// Built with CGO_ENABLED=0 it is a static binary, which no LD_PRELOAD shim
// reaches; under sockshim with intercept_bind = true its bind(2) gets
// sockshim's socket all the same (gobind.toml). On SIGTERM it drains with
// gracefulhttp and exits.
package main

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

	"github.com/sockshim/sockshim/examples/gracefulhttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "TCP address to listen on")
	version := flag.String("version", "v1", "version to report in X-Version")
	drain := flag.Duration("drain", 25*time.Second, "longest drain after SIGTERM; keep it below sockshim's drain_timeout")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid())
	if err := run(*listen, *version, *drain, log); err != nil {
		log.Error("gobind", "err", err)
		os.Exit(1)
	}
}

func run(addr, version string, drain time.Duration, log *slog.Logger) error {
	// Before the listener: a SIGTERM that arrives as soon as the socket
	// accepts must start a drain, not kill the process.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	gen := os.Getenv("SOCKSHIM_GENERATION")
	srv := gracefulhttp.New(&http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Version", version)
			w.Header().Set("X-Generation", gen)
			w.Header().Set("X-Pid", fmt.Sprint(os.Getpid()))
			fmt.Fprintf(w, "version=%s generation=%s pid=%d\n", version, gen, os.Getpid())
		}),
	})
	srv.Serve([]net.Listener{ln})
	log.Info("serving", "addr", ln.Addr(), "version", version)
	var failed error
	select {
	case sig := <-stop:
		log.Info("draining", "signal", sig)
	case failed = <-srv.Failed():
	}
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	return errors.Join(failed, srv.Drain(ctx))
}
