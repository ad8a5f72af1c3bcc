// Command business is the reloadable business group of the gateway example.
// It accepts on the socket named "internal" and answers each line "ID
// PAYLOAD" with "ID VERSION RESULT" (package wire), where VERSION is read at
// start from the file named by -version-file (or $BUSINESS_VERSION_FILE), so
// each reload can serve a new one.
//
// On SIGTERM it stops accepting, lets each connection finish the request it
// is answering (and those it has already read), and ends each connection
// right after an answer (an idle one at once): a gateway sees EOF only
// between answers. Requests still in the socket are not answered; the
// gateway sends them again.
//
// With -websocket it also accepts WebSocket clients on the socket named
// "public" and answers them itself: the naive setup where one reloadable
// group holds the clients, whose connections every reload cuts.
package main

import (
	"bufio"
	"bytes"
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
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sockshim/sockshim/examples/gateway/front"
	"github.com/sockshim/sockshim/examples/gateway/sockets"
	"github.com/sockshim/sockshim/examples/gateway/wire"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("business", os.Getpid())
	if err := run(log); err != nil {
		log.Error("business", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	internalName := flag.String("internal", "internal", "name (LISTEN_FDNAMES) of the socket to answer requests on")
	versionFile := flag.String("version-file", os.Getenv("BUSINESS_VERSION_FILE"), "file whose first line is the version to answer with (default $BUSINESS_VERSION_FILE; none: \"dev\")")
	work := flag.Duration("work", 0, "time each request takes")
	drainTimeout := flag.Duration("drain-timeout", 10*time.Second, "on SIGTERM, longest wait for connections to end")
	websocket := flag.Bool("websocket", false, "naive mode: also accept WebSocket clients on the socket named by -public, and answer them here")
	publicName := flag.String("public", "public", "with -websocket: name of the socket to accept WebSocket clients on")
	wsGrace := flag.Duration("ws-grace", 0, "with -websocket: on SIGTERM, keep serving the WebSocket clients this long before closing them")
	flag.Parse()

	version := "dev"
	if *versionFile != "" {
		b, err := os.ReadFile(*versionFile)
		if err != nil {
			return fmt.Errorf("version: %w", err)
		}
		line, _, _ := bytes.Cut(b, []byte("\n"))
		if version = wire.CleanVersion(string(line)); version == "" {
			return fmt.Errorf("version: %s is empty", *versionFile)
		}
	}
	log = log.With("version", version)

	socks := sockets.Take()
	s := &server{version: version, work: *work, log: log, conns: map[*conn]struct{}{}}
	var lns []net.Listener
	if f, ok := socks[*internalName]; ok {
		ln, err := sockets.Listener(f)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
		s.wg.Go(func() { s.serve(ln) })
	}
	var ws *front.Front
	var httpSrv *http.Server
	if *websocket {
		f, ok := socks[*publicName]
		if !ok {
			return fmt.Errorf("-websocket: no socket named %q passed (LISTEN_FDNAMES)", *publicName)
		}
		ln, err := sockets.Listener(f)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
		ws = &front.Front{Log: log, Answer: func(ctx context.Context, payload []byte) (string, []byte, error) {
			if *work > 0 {
				time.Sleep(*work)
			}
			return version, wire.Result(payload), nil
		}}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(struct {
				PID     int    `json:"pid"`
				Version string `json:"version"`
				front.Stats
			}{os.Getpid(), version, ws.Stats()})
		})
		mux.Handle("/", ws)
		httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		go httpSrv.Serve(ln)
	}
	if len(lns) == 0 {
		return fmt.Errorf("no socket named %q passed (LISTEN_FDNAMES); run me under sockshim or a .socket unit", *internalName)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY=1", "err", err)
	}
	log.Info("serving", "sockets", len(lns), "websocket", *websocket)

	sig := <-stop
	log.Info("draining", "signal", sig)
	// Closing our copies stops accepting; the sockets stay open in sockshim,
	// where new connections wait for the next generation.
	for _, ln := range lns {
		ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), *drainTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		if ws != nil {
			sleep(ctx, *wsGrace)
			ws.CloseAll(ctx, "reloading")
		}
		s.drain()
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		log.Info("drained")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain: connections still open after %s", *drainTimeout)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

type server struct {
	version string
	work    time.Duration
	log     *slog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining bool
	wg       sync.WaitGroup
}

type conn struct {
	net.Conn
	busy bool // answering a request (server.mu)
}

func (s *server) serve(ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c := &conn{Conn: nc}
		s.mu.Lock()
		if s.draining {
			s.mu.Unlock()
			nc.Close() // nothing read yet: the gateway dials again
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c)
	}
}

// drain makes every connection end after its current answer, an idle one at
// once.
func (s *server) drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	for c := range s.conns {
		if !c.busy {
			c.SetReadDeadline(time.Now()) // interrupts the read that waits for the next request
		}
	}
}

func (s *server) handle(c *conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	br := bufio.NewReaderSize(c, wire.MaxMessage)
	bw := bufio.NewWriter(c)
	var out []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			break // EOF, drain, or a request longer than wire.MaxMessage
		}
		s.mu.Lock()
		c.busy = true
		s.mu.Unlock()
		req, err := wire.ParseRequest(bytes.TrimSuffix(line, []byte("\n")))
		out = out[:0]
		switch {
		case req.ID == nil:
			s.log.Warn("bad request; closing the connection", "err", err)
			c.Close()
			return
		case err != nil:
			out = wire.AppendError(out, req.ID, err.Error())
		default:
			if s.work > 0 {
				time.Sleep(s.work)
			}
			out = wire.AppendAnswer(out, req.ID, s.version, wire.Result(req.Payload))
		}
		bw.Write(append(out, '\n'))
		// Answers are flushed when no further request is already waiting,
		// so a burst of pipelined requests costs one write.
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				break
			}
		}
		s.mu.Lock()
		c.busy = false
		draining := s.draining
		s.mu.Unlock()
		// Draining: answer the requests already read (whole lines in our
		// buffer), then end; what is still in the socket is sent again by
		// the gateway.
		if draining && !lineBuffered(br) {
			break
		}
	}
	if err := bw.Flush(); err != nil {
		c.Close()
		return
	}
	closeAfterAnswers(c)
}

func lineBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// closeAfterAnswers ends c so that its peer reads every answer, then EOF:
// shut down our sending side, read (and drop) what the peer still sends until
// it closes too or a second passes, then close. Closing at once with unread
// requests in the socket would make the kernel send a reset, which can
// destroy answers the peer has not read yet (tcp).
func closeAfterAnswers(c *conn) {
	defer c.Close()
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	var buf [4096]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}
