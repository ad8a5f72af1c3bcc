package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/sockshim/sockshim/internal/sockfile"
	"github.com/sockshim/sockshim/shim/config"
	"golang.org/x/sys/unix"
)

// Limits of the endpoint. A client that opens connections and sends
// nothing holds at most maxConns of them for readHeaderTimeout each; it
// delays other scrapes, never the supervisor, which only ever answers one
// status request per scrape.
const (
	maxConns          = 8
	maxScrapes        = 2 // concurrent scrapes; more get 503
	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 30 * time.Second
	maxHeaderBytes    = 8 << 10
	statusTimeout     = 5 * time.Second // for the supervisor's snapshot
)

// Server is the metrics endpoint.
type Server struct {
	ln net.Listener

	mu     sync.Mutex
	srv    *http.Server // set by Serve
	closed bool
}

// Listen binds the endpoint cfg describes: a TCP address, or a unix
// socket file created with cfg.Mode (a stale file nobody answers on is
// replaced, a live one never).
func Listen(cfg config.Metrics) (*Server, error) {
	var ln net.Listener
	var err error
	s := &Server{}
	switch cfg.Network {
	case "tcp":
		ln, err = net.Listen("tcp", cfg.Addr)
	case "unix":
		if err := sockfile.RemoveStale(cfg.Addr, unix.SOCK_STREAM); err != nil {
			return nil, fmt.Errorf("metrics socket: %w", err)
		}
		// The umask is process-wide, so the mode is set right after bind;
		// until then the socket's directory guards it like [[listen]]'s.
		var ul *net.UnixListener
		ul, err = net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Addr, Net: "unix"})
		if err == nil {
			ul.SetUnlinkOnClose(true)
			if err = os.Chmod(cfg.Addr, cfg.Mode); err != nil {
				ul.Close()
			}
			ln = ul
		}
	default:
		return nil, fmt.Errorf("metrics: unknown network %q", cfg.Network)
	}
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint %s: %w", cfg.Listen, err)
	}
	s.ln = &limitListener{Listener: ln, slots: make(chan struct{}, maxConns)}
	return s, nil
}

// Addr is where the endpoint listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers GET /metrics from src until Close.
func (s *Server) Serve(src Source, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(src, log)) // HEAD too
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.srv = srv
	s.mu.Unlock()
	log.Info("metrics endpoint listening", "address", s.ln.Addr().String())
	if err := srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics endpoint: %w", err)
	}
	return nil
}

// Handler renders a snapshot from src per request, at most maxScrapes at
// once (more are answered 503), each waiting at most statusTimeout for it.
func Handler(src Source, log *slog.Logger) http.Handler {
	scrapes := make(chan struct{}, maxScrapes)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case scrapes <- struct{}{}:
			defer func() { <-scrapes }()
		default:
			http.Error(w, "too many scrapes at once", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), statusTimeout)
		defer cancel()
		st, err := src(ctx)
		if err != nil {
			log.Warn("metrics scrape failed", "err", err)
			http.Error(w, "no status from the supervisor: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		var b bytes.Buffer
		if err := Write(&b, st); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
		w.Write(b.Bytes())
	})
}

// Close stops the endpoint and removes its socket file.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.srv != nil {
		return s.srv.Close()
	}
	return s.ln.Close()
}

// limitListener accepts at most cap(slots) connections at once; further
// ones wait in the kernel's accept queue.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
