// Package gracefulhttp serves an http.Server on inherited sockets and drains
// it on a signal without losing a request: the part of a worker that sockshim
// cannot do for it. Copy it, or import it.
//
// Why not http.Server.Shutdown? Shutdown marks the server as shutting down,
// and every connection goroutine checks that mark right after it has read a
// request; if it is set, the connection is closed without an answer. A client
// whose connection was accepted just before the signal, and whose request is
// read just after, gets EOF (golang/go#75591): under 32 concurrent clients
// that is a few requests per restart. Shutdown and SetKeepAlivesEnabled(false)
// also close every idle keep-alive connection at once, and a client may be
// reusing one at that moment: its request is already on the wire, and it gets
// EOF or a reset. HTTP clients may retry an idempotent request such as a GET
// then, not a POST (RFC 9110 §9.2.2).
//
// Drain therefore closes the listeners (only this process's copies: the
// socket itself stays open in sockshim, so the kernel keeps queueing new
// connections for the next generation), answers every request that reaches
// the handler from then on with "Connection: close" (the server closes the
// connection after that answer), and waits for the connections it tracks
// through ConnState to close. It closes a connection itself only once the
// connection has been idle, or new without a request, for IdleGrace (or when
// ctx ends). So a client that sends on each kept-alive connection at least
// once per IdleGrace never meets a closed connection: each one ends with an
// answer that says so. What remains is the race every HTTP/1.1 idle timeout
// has (RFC 9112 §9.3.1): a request sent on a connection that has been silent
// for IdleGrace, at the instant Drain closes it, is lost (EOF or a reset).
// A client that pauses longer than IdleGrace and sends after the close finds
// the connection closed, as after the server's own IdleTimeout. Pick
// IdleGrace longer than your clients' pauses between requests on one
// connection, and well below drain_timeout.
//
// This is HTTP/1.1: "Connection: close" means nothing in HTTP/2.
package gracefulhttp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleGrace is IdleGrace when it is zero.
const DefaultIdleGrace = time.Second

// Server wraps an http.Server with connection tracking.
type Server struct {
	// IdleGrace is how long a connection must have been idle, or new without
	// a request, before Drain closes it; zero means DefaultIdleGrace.
	IdleGrace time.Duration

	srv      *http.Server
	draining atomic.Bool
	wg       sync.WaitGroup // one per Serve goroutine
	mu       sync.Mutex
	conns    map[net.Conn]connState
	closed   chan struct{} // signalled whenever a connection closes
	failed   chan error    // the first accept loop that ended before Drain
	lns      []net.Listener
}

type connState struct {
	state http.ConnState
	since time.Time
}

// New takes over srv.Handler (to answer with "Connection: close" once Drain
// has begun) and srv.ConnState (chaining any hook already set).
func New(srv *http.Server) *Server {
	s := &Server{srv: srv, conns: make(map[net.Conn]connState), closed: make(chan struct{}, 1), failed: make(chan error, 1)}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
	hook := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		s.track(c, st)
		if hook != nil {
			hook(c, st)
		}
	}
	return s
}

func (s *Server) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
		select {
		case s.closed <- struct{}{}:
		default:
		}
	default:
		s.conns[c] = connState{st, time.Now()}
	}
}

// Serve starts serving on every listener in the background.
func (s *Server) Serve(lns []net.Listener) {
	s.lns = append(s.lns, lns...)
	for _, ln := range lns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// Serve returns when Drain closes the listener; that error is
			// the expected end, not a failure.
			err := s.srv.Serve(ln)
			if !s.draining.Load() {
				select {
				case s.failed <- fmt.Errorf("accepting on %s: %w", ln.Addr(), err):
				default:
				}
			}
		}()
	}
}

// Failed receives the error of the first listener that stopped accepting
// before Drain, such as accept(2) failing with EINVAL on a socket that
// another process holding it shut down. The process then serves no more on
// that socket while it looks alive: drain and exit non-zero, and the
// supervisor starts a replacement.
func (s *Server) Failed() <-chan error { return s.failed }

// Open returns the number of connections not yet closed.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Drain stops accepting, ends every accepted connection as the package doc
// describes, and returns when none is left or ctx ends (then the remaining
// connections are closed and ctx's error returned).
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	var errs []error
	for _, ln := range s.lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	// Every accepted connection is tracked before Serve can return (the
	// server sets StateNew synchronously in its accept loop), so after this
	// wait the tracked set is complete and can only shrink.
	s.wg.Wait()
	grace := s.IdleGrace
	if grace <= 0 {
		grace = DefaultIdleGrace
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.closeIdle(grace) > 0 {
		select {
		case <-s.closed:
		case <-tick.C:
		case <-ctx.Done():
			s.srv.Close()
			return fmt.Errorf("drain: %d connections still open: %w", s.Open(), ctx.Err())
		}
	}
	// Nothing is open; Shutdown now only releases the server's resources.
	if err := s.srv.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closeIdle closes the connections that have been idle, or new without a
// request, for grace or longer, and returns the number still tracked.
func (s *Server) closeIdle(grace time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, cs := range s.conns {
		if (cs.state == http.StateIdle || cs.state == http.StateNew) && time.Since(cs.since) >= grace {
			// The connection's goroutine sees the close and reports
			// StateClosed; until then a later round closes it again,
			// which is harmless.
			c.Close()
		}
	}
	return len(s.conns)
}
