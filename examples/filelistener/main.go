// Command filelistener is a worker with no systemd library at all: it takes
// its listener from fd 3 with net.FileListener, reports READY=1 by writing
// one datagram to NOTIFY_SOCKET, and drains with gracefulhttp on SIGTERM.
// It shows the whole socket-activation contract in a page of code.
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
	"strconv"
	"syscall"
	"time"

	"github.com/sockshim/sockshim/examples/gracefulhttp"
)

func main() {
	version := flag.String("version", "v1", "version to report")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid())
	if err := run(*version, log); err != nil {
		log.Error("filelistener", "err", err)
		os.Exit(1)
	}
}

func run(version string, log *slog.Logger) error {
	ln, err := inheritedListener()
	if err != nil {
		return err
	}
	gen := os.Getenv("SOCKSHIM_GENERATION")
	srv := gracefulhttp.New(&http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Version", version)
			w.Header().Set("X-Generation", gen)
			fmt.Fprintf(w, "version=%s generation=%s pid=%d\n", version, gen, os.Getpid())
		}),
	})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	srv.Serve([]net.Listener{ln})
	if err := notify("READY=1"); err != nil {
		log.Warn("READY=1 not sent", "err", err)
	}
	var failed error
	select {
	case <-stop:
	case failed = <-srv.Failed():
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	return errors.Join(failed, srv.Drain(ctx))
}

// inheritedListener wraps fd 3, checking that the sockets are really ours.
func inheritedListener() (net.Listener, error) {
	if pid, _ := strconv.Atoi(os.Getenv("LISTEN_PID")); pid != os.Getpid() {
		return nil, errors.New("LISTEN_PID is not this process: not socket-activated")
	}
	if n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS")); n < 1 {
		return nil, errors.New("LISTEN_FDS passes no socket")
	}
	f := os.NewFile(3, os.Getenv("LISTEN_FDNAMES"))
	// FileListener dups the descriptor; the original is closed right away so
	// that exactly one copy (the listener's) remains in this process.
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("fd 3: %w", err)
	}
	return ln, nil
}

// notify sends one sd_notify(3) datagram; "@" names an abstract socket.
func notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
