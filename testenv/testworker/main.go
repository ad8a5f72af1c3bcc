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
	"net/netip"
	"os"
	"os/exec"
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
	acceptLogPath := flag.String("accept-log", "", "append \"PID REMOTE-ADDR\" to this file for every accepted connection, before reading from it")
	crashAfterReady := flag.Duration("crash-after-ready", 0, "exit with status 5 this long after READY=1, in-flight requests unanswered")
	daemonize := flag.String("daemonize", "", `before READY=1, start a copy of this program in a new session that serves the listening sockets with version VERSION-daemon, then "exit" (status 0) or "stay" (carry on as usual)`)
	daemonPIDFile := flag.String("daemon-pidfile", "", "where the -daemonize copy writes its pid")
	daemonChild := flag.Bool("daemon-child", false, "internal: serve descriptors 3… as the -daemonize copy")
	listenFD3 := flag.Bool("listen-fd3", false, "serve descriptor 3, without LISTEN_FDS: for the benchmark's floor series, which starts workers without a trampoline to set LISTEN_PID")
	exitAfterReady := flag.Duration("exit-after-ready", 0, "this long after READY=1, drain as on SIGTERM (every accepted request answered) and exit with status 3: a build that dies soon after it started")
	healthDir := flag.String("health-dir", "", "write DIR/PID: \"ok\" at READY=1, \"failing\" once -health-fail-after passed (for a health_command that checks this very worker)")
	shutdownListeners := flag.Bool("shutdown-listeners", false, "on the stop signal, shutdown(2) the inherited listening sockets before draining, as a server does that wakes its accept loop that way (on a shared socket, this ends accepting for every process that holds it)")
	bind := flag.String("bind", "", "listen on this TCP address itself (net.Listen), as a server that knows nothing of socket activation; with intercept_bind, sockshim's socket")
	acceptAfter := flag.Duration("accept-after", 0, "with -bind: bind and listen at once, with no Go listener, then wait this long before serving: a server that binds early and accepts late (its socket joins the Go runtime's epoll set only when it serves)")
	acceptMarks := flag.String("accept-marks", "", "write DIR/PID just before the listeners are made (with -accept-after, once the wait is over), for a test that checks readiness was not said early")
	healthFailAfter := flag.Duration("health-fail-after", 0, "with -health-dir: report failing this long after READY=1 (0: never)")
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
	if *daemonChild {
		serveDaemon(*version, *acceptLogPath)
		return
	}
	var lns []net.Listener
	var err error
	switch {
	case *bind != "" && *acceptAfter > 0:
		var ln net.Listener
		ln, err = bindEarly(*bind, *acceptAfter, *acceptMarks, log)
		lns = []net.Listener{ln}
	case *bind != "":
		mark(*acceptMarks, log)
		var ln net.Listener
		ln, err = net.Listen("tcp", *bind)
		lns = []net.Listener{ln}
	case *listenFD3:
		var ln net.Listener
		ln, err = net.FileListener(os.NewFile(3, "fd3"))
		lns = []net.Listener{ln}
	default:
		lns, err = activation.Listeners()
	}
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

	if *daemonize != "" {
		if err := startDaemon(listeners, *version, *daemonPIDFile, *acceptLogPath); err != nil {
			log.Error("daemonize", "err", err)
			os.Exit(1)
		}
		if *daemonize == "exit" {
			fmt.Fprintln(os.Stderr, "testworker: started a daemon copy and exiting, as asked (-daemonize exit)")
			os.Exit(0)
		}
	}

	gen, id := inherited.Env["SOCKSHIM_GENERATION"], inherited.Env["SOCKSHIM_WORKER_ID"]
	mux := handler(*version, gen, id, *work)
	accepts := openAcceptLog(*acceptLogPath, log)
	plain := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ConnState: accepts.connState()}
	srv := gracefulhttp.New(plain)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	srv.Serve(listeners)
	// Healthy before READY=1: a health probe may run the moment sockshim
	// hears it.
	if *healthDir != "" {
		reportHealth(*healthDir, "ok", log)
	}
	daemon.SdNotify(false, "READY=1\nSTATUS=serving "+*version)
	log.Info("serving", "generation", gen, "worker", id, "listeners", len(listeners))
	if *healthDir != "" && *healthFailAfter > 0 {
		time.AfterFunc(*healthFailAfter, func() { reportHealth(*healthDir, "failing", log) })
	}
	exited := make(chan struct{})
	if *exitAfterReady > 0 {
		time.AfterFunc(*exitAfterReady, func() {
			fmt.Fprintln(os.Stderr, "testworker: exiting after ready, as asked (-exit-after-ready)")
			close(exited)
		})
	}
	if *crashAfterReady > 0 {
		time.AfterFunc(*crashAfterReady, func() {
			fmt.Fprintln(os.Stderr, "testworker: crashing after ready, as asked (-crash-after-ready)")
			// Log every connection it will drop, for the test to attribute
			// each failure: its listeners are closed first (Close returns
			// once no accept is under way), so none is accepted after the
			// last look at what it holds. The other workers go on accepting
			// from the shared sockets.
			for _, l := range listeners {
				l.Close()
			}
			accepts.held()
			os.Exit(5)
		})
	}
	status := 0
wait:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM && *ignoreTERM {
				log.Info("ignoring SIGTERM, as asked (-ignore-sigterm)")
				continue
			}
			break wait
		case <-exited:
			status = 3
			break wait
		case err := <-srv.Failed():
			// An accept loop ended (gracefulhttp's Failed): exit non-zero
			// after the drain, to be replaced.
			log.Error("draining, to be replaced", "err", err)
			status = 4
			break wait
		}
	}
	// Only on the stop signal: the test counts one shutdown per worker told
	// to stop, not one more from each worker whose accept it ended.
	if *shutdownListeners && status == 0 {
		shutdown(listeners, log)
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
	os.Exit(status)
}

// shutdown calls shutdown(2) on each listener's socket.
// bindEarly binds and listens on the TCP address with bare system calls,
// waits, and only then makes the Go listener, which adds the socket to the
// runtime's epoll set: until then no thread of the process waits on it.
func bindEarly(addr string, wait time.Duration, marks string, log *slog.Logger) (net.Listener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-bind %s: %w", addr, err)
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ap.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", addr, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	time.Sleep(wait)
	mark(marks, log)
	f := os.NewFile(uintptr(fd), addr)
	defer f.Close()
	return net.FileListener(f)
}

// mark writes DIR/PID (-accept-marks), when DIR is set.
func mark(dir string, log *slog.Logger) {
	if dir == "" {
		return
	}
	if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(os.Getpid())), nil, 0o644); err != nil {
		log.Error("accept mark", "err", err)
	}
}

func shutdown(lns []net.Listener, log *slog.Logger) {
	for _, l := range lns {
		sc, ok := l.(syscall.Conn)
		if !ok {
			continue
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			log.Error("shutdown", "err", err)
			continue
		}
		raw.Control(func(fd uintptr) {
			err = unix.Shutdown(int(fd), unix.SHUT_RDWR)
		})
		log.Info("shut the listening socket down, as asked (-shutdown-listeners)", "err", err)
	}
}

// reportHealth writes what this worker says of its health to DIR/PID,
// atomically.
func reportHealth(dir, state string, log *slog.Logger) {
	path := filepath.Join(dir, strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(path+".tmp", []byte(state+"\n"), 0o644); err != nil {
		log.Error("health report", "err", err)
		return
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		log.Error("health report", "err", err)
	}
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

// handler answers every request, after reading its body and waiting work,
// with who served it.
func handler(version, gen, id string, work time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// A request counts as answered only with its whole body read.
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if work > 0 {
			time.Sleep(work)
		}
		h := w.Header()
		h.Set("X-Version", version)
		h.Set("X-Generation", gen)
		h.Set("X-Worker", id)
		h.Set("X-Pid", strconv.Itoa(os.Getpid()))
		fmt.Fprintf(w, "version=%s generation=%s worker=%s pid=%d\n", version, gen, id, os.Getpid())
	})
	return mux
}

// acceptLog appends "PID PEER" for every connection this process accepts,
// so a test can tell which process held a request that failed.
type acceptLog struct {
	f   *os.File
	pid int
}

func openAcceptLog(path string, log *slog.Logger) *acceptLog {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		log.Error("accept log", "err", err)
		os.Exit(1)
	}
	return &acceptLog{f: f, pid: os.Getpid()}
}

// connState is an http.Server ConnState hook.
func (a *acceptLog) connState() func(net.Conn, http.ConnState) {
	if a == nil {
		return nil
	}
	return func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			fmt.Fprintf(a.f, "%d %s\n", a.pid, c.RemoteAddr())
		}
	}
}

// held logs the peer of every TCP connection this process holds now: one
// accepted just before an abrupt exit may not have reached connState yet.
// Duplicates of logged lines are harmless.
func (a *acceptLog) held() {
	if a == nil {
		return
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := unix.Getpeername(fd)
		if err != nil {
			continue // not a connected socket
		}
		var peer string
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			peer = net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
		case *unix.SockaddrInet6:
			peer = net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
		default:
			continue
		}
		fmt.Fprintf(a.f, "%d %s\n", a.pid, peer)
	}
}

// startDaemon starts this program again in a new session, holding copies of
// the listening sockets as descriptors 3…, as a daemonizing server does.
func startDaemon(lns []net.Listener, version, pidFile, acceptLog string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var files []*os.File
	for _, ln := range lns {
		f, err := ln.(interface{ File() (*os.File, error) }).File()
		if err != nil {
			return err
		}
		defer f.Close()
		files = append(files, f)
	}
	cmd := exec.Command(exe, "-daemon-child", "-version", version+"-daemon", "-accept-log", acceptLog)
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	// Written here, not by the copy: containment may kill the copy before
	// it gets that far, and a test must still find it.
	if pidFile != "" {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			return err
		}
	}
	return cmd.Process.Release()
}

// serveDaemon is the -daemonize copy: it serves descriptors 3… (as many as
// are open sockets) until killed, never notifying anyone.
func serveDaemon(version, acceptLog string) {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("testworker", version, "pid", os.Getpid())
	var lns []net.Listener
	for fd := 3; ; fd++ {
		f := os.NewFile(uintptr(fd), "daemon-listener")
		ln, err := net.FileListener(f)
		if err != nil {
			break
		}
		f.Close()
		lns = append(lns, ln)
	}
	srv := &http.Server{Handler: handler(version, "daemon", "daemon", 0), ReadHeaderTimeout: 10 * time.Second, ConnState: openAcceptLog(acceptLog, log).connState()}
	if len(lns) == 0 {
		log.Error("daemon copy: no listening socket from descriptor 3")
		os.Exit(1)
	}
	for _, ln := range lns[1:] {
		go srv.Serve(ln)
	}
	log.Info("daemon copy serving", "listeners", len(lns))
	srv.Serve(lns[0])
}
