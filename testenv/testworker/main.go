// Command testworker is the worker sockshim's tests run: an HTTP server on
// socket-activated listeners (go-systemd activation), READY=1 over
// NOTIFY_SOCKET (go-systemd daemon), lossless drain on SIGTERM, and knobs to
// misbehave on purpose. Every answer says which version, generation, worker
// and pid served it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sockshim/sockshim/examples/gracefulhttp"
	"github.com/sockshim/sockshim/internal/procfs"
	"github.com/sockshim/sockshim/testenv"
	"golang.org/x/sys/unix"
)

func main() {
	// Before anything else: what was inherited.
	inherited := snapshot()

	version := flag.String("version", "v1", "version string to serve")
	startDelay := flag.Duration("start-delay", 0, "sleep this long before serving and READY=1")
	exitBeforeReady := flag.Bool("exit-before-ready", false, "exit with status 3 after the start delay, never ready")
	ignoreTERM := flag.Bool("ignore-sigterm", false, "log SIGTERM and carry on")
	work := flag.Duration("work", 0, "time each request takes")
	drainTimeout := flag.Duration("drain-timeout", 30*time.Second, "longest drain on SIGTERM")
	report := flag.String("report", "", "write DIR/PID.json with inherited fds and env")
	drainMode := flag.String("drain", "tracked", `how to drain: "tracked" (gracefulhttp, lossless) or "shutdown" (http.Server.Shutdown alone, for comparison)`)
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("testworker", *version, "pid", os.Getpid())

	if *report != "" {
		if err := writeReport(*report, inherited); err != nil {
			log.Error("report", "err", err)
			os.Exit(1)
		}
	}
	if *startDelay > 0 {
		time.Sleep(*startDelay)
	}
	if *exitBeforeReady {
		fmt.Fprintln(os.Stderr, "testworker: exiting before ready, as asked (-exit-before-ready)")
		os.Exit(3)
	}
	lns, err := activation.Listeners()
	if err != nil {
		log.Error("inherited sockets", "err", err)
		os.Exit(1)
	}
	var listeners []net.Listener
	for _, l := range lns {
		if l != nil {
			listeners = append(listeners, l)
		}
	}
	if len(listeners) == 0 {
		log.Error("no listening sockets passed (LISTEN_FDS)")
		os.Exit(1)
	}

	gen, id := inherited.Env["SOCKSHIM_GENERATION"], inherited.Env["SOCKSHIM_WORKER_ID"]
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// A request counts as answered only with its whole body read.
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if *work > 0 {
			time.Sleep(*work)
		}
		h := w.Header()
		h.Set("X-Version", *version)
		h.Set("X-Generation", gen)
		h.Set("X-Worker", id)
		h.Set("X-Pid", strconv.Itoa(os.Getpid()))
		fmt.Fprintf(w, "version=%s generation=%s worker=%s pid=%d\n", *version, gen, id, os.Getpid())
	})
	plain := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	srv := gracefulhttp.New(plain)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	srv.Serve(listeners)
	daemon.SdNotify(false, "READY=1\nSTATUS=serving "+*version)
	log.Info("serving", "generation", gen, "worker", id, "listeners", len(listeners))

	for sig := range sigs {
		if sig == syscall.SIGTERM && *ignoreTERM {
			log.Info("ignoring SIGTERM, as asked (-ignore-sigterm)")
			continue
		}
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), *drainTimeout)
	defer cancel()
	drain := srv.Drain
	if *drainMode == "shutdown" {
		// What most Go servers do; loses requests (see gracefulhttp).
		drain = plain.Shutdown
	}
	if err := drain(ctx); err != nil {
		log.Error("drain", "err", err)
		os.Exit(1)
	}
	log.Info("drained")
}

// snapshot records what this process inherited: the descriptors without
// close-on-exec (everything the Go runtime or this program opens itself is
// close-on-exec, and anything that was close-on-exec did not survive exec)
// and the variables a supervisor sets.
func snapshot() testenv.Report {
	r := testenv.Report{PID: os.Getpid(), FDs: map[int]string{}, Env: map[string]string{}}
	fds, _ := procfs.FDs(os.Getpid())
	for fd, target := range fds {
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			r.FDs[fd] = target
		}
	}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		for _, p := range []string{"LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_", "SOCKSHIM_"} {
			if strings.HasPrefix(k, p) {
				r.Env[k] = v
			}
		}
	}
	return r
}

func writeReport(dir string, r testenv.Report) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".%d.tmp", r.PID))
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("%d.json", r.PID)))
}
