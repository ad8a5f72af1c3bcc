// Package gracefulhttp serves an http.Server on inherited sockets and drains
// it on a signal without losing a request: the part of a worker that sockshim
// cannot do for it. Copy it, or import it.
//
// Why not http.Server.Shutdown? Shutdown marks the server as shutting down,
// and every connection goroutine checks that mark right after it has read a
// request; if it is set, the connection is closed without an answer. A client
// whose connection was accepted just before the signal, and whose request is
// read just after, gets EOF (golang/go#75591): under 32 concurrent clients
// that is a few requests per restart. Drain therefore never calls Shutdown
// while connections are open: it closes the listeners (only this process's
// copies: the socket itself stays open in sockshim, so the kernel keeps
// queueing new connections for the next generation), turns keep-alives off
// so each connection ends after its current response, and waits for the
// connections it tracks through ConnState to close.
package gracefulhttp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server wraps an http.Server with connection tracking.
type Server struct {
	srv   *http.Server
	wg    sync.WaitGroup // one per Serve goroutine
	mu    sync.Mutex
	conns map[net.Conn]http.ConnState
	idle  chan struct{} // signalled whenever a connection closes
	lns   []net.Listener
}

// New takes over srv.ConnState (chaining any hook already set).
func New(srv *http.Server) *Server {
	s := &Server{srv: srv, conns: make(map[net.Conn]http.ConnState), idle: make(chan struct{}, 1)}
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
		case s.idle <- struct{}{}:
		default:
		}
	default:
		s.conns[c] = st
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
			_ = s.srv.Serve(ln)
		}()
	}
}

// Open returns the number of connections not yet closed.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Drain stops accepting, lets every accepted connection finish its current
// request, and returns when none is left or ctx ends (then the remaining
// connections are closed and ctx's error returned).
func (s *Server) Drain(ctx context.Context) error {
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
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// Disabling keep-alives also closes connections that sit idle
		// between requests (and ones that sent nothing for 5s); repeating
		// it catches connections that became idle since the last round.
		s.srv.SetKeepAlivesEnabled(false)
		if s.Open() == 0 {
			break
		}
		select {
		case <-s.idle:
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
