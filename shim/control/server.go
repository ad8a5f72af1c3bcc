package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sockshim/sockshim/internal/sockfile"
	"github.com/sockshim/sockshim/internal/unixaddr"
	"golang.org/x/sys/unix"
)

const (
	// maxConns is how many conversations run at once; more connections
	// are answered "busy" and closed. Reload requests wait for the reload,
	// so a deploy tool that fires one per host or per service instance can
	// hold dozens; each costs a descriptor and a goroutine.
	maxConns = 64
	// defaultRequestTimeout bounds the wait for a client's request line.
	defaultRequestTimeout = 5 * time.Second
	// Accept failures for want of descriptors or memory are retried after
	// a pause that doubles from minAcceptDelay to maxAcceptDelay.
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
	// failureBurst is the quiet time after which an accept failure starts
	// a new burst, logged again.
	failureBurst = 5 * time.Second
)

// Handler is what the server asks of the supervisor.
type Handler interface {
	// Reload runs (or joins) a reload and returns when it has ended or ctx
	// is done; progress receives human-readable lines while it runs.
	Reload(ctx context.Context, progress func(string)) (string, error)
	Status(ctx context.Context) (Status, error)
}

// Server accepts control connections.
type Server struct {
	ln             *net.UnixListener
	path           string
	log            *slog.Logger
	requestTimeout time.Duration
	slots          chan struct{} // one per running conversation

	// ctx is canceled by Close, which ends every conversation.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool // set by Close; no conversation starts after it
	wg     sync.WaitGroup
}

// Listen creates the control socket at path with mode 0600, in a directory
// that only root or sockshim's own uid can write (created 0700 if missing),
// replacing a socket file nobody answers on.
func Listen(path string, log *slog.Logger) (*Server, error) {
	if len(path) > unixaddr.MaxPath {
		return nil, fmt.Errorf("control socket path %s is %d bytes, longer than a unix socket address allows (%d); set a shorter [control] socket",
			path, len(path), unixaddr.MaxPath)
	}
	if err := privateDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := sockfile.RemoveStale(path, unix.SOCK_STREAM); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The umask is process-wide, so the mode is fixed with chmod right after
	// bind; the peer check makes the short window harmless.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{ln: ln, path: path, log: log, requestTimeout: defaultRequestTimeout,
		slots: make(chan struct{}, maxConns), ctx: ctx, cancel: cancel}, nil
}

// privateDir makes sure nobody but root and sockshim's uid can replace
// what is in dir: a missing dir is created 0700; an existing one must be a
// directory itself (not a symlink), belong to root or this uid, and not be
// writable by group or others (a sticky bit would still let anyone create a
// socket there before sockshim does).
func privateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("control socket directory: %w", err)
		}
		// EEXIST: someone was faster; what they made is checked below.
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("control socket directory: %w", err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	uid := os.Getuid()
	switch st, _ := fi.Sys().(*syscall.Stat_t); {
	case fi.Mode().Type() == os.ModeSymlink:
		return fmt.Errorf("control socket directory %s is a symlink, not a directory", dir)
	case !fi.IsDir():
		return fmt.Errorf("control socket directory %s is not a directory", dir)
	case st == nil:
		return fmt.Errorf("control socket directory %s: no owner information", dir)
	case st.Uid != 0 && int(st.Uid) != uid:
		return fmt.Errorf("control socket directory %s belongs to uid %d, not to root or sockshim's uid %d", dir, st.Uid, uid)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("control socket directory %s is writable by others (mode %v): another user could take the socket's place; use a directory only root or uid %d can write",
			dir, fi.Mode().Perm(), uid)
	}
	return nil
}

// Path is the socket's file name.
func (s *Server) Path() string { return s.path }

// Serve accepts connections until Close. Accept failures caused by a
// shortage of descriptors or memory are waited out with a backoff; each
// burst of them (failures less than failureBurst apart) is logged once when
// it begins and once when an accept succeeds again. Any other failure
// closes the socket, so that clients are refused instead of waiting for an
// answer that never comes.
func (s *Server) Serve(h Handler) {
	defer s.ln.Close()
	var delay time.Duration
	// The current burst of accept failures: how many, the last one's
	// time, whether the recovery was logged.
	failed, lastFailure, recovered := 0, time.Time{}, false
	busy := 0 // connections answered busy in a row
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if !transient(err) {
				s.log.Error("control socket accept failed; closing the control socket", "err", err)
				return
			}
			if failed == 0 || time.Since(lastFailure) > failureBurst {
				s.log.Warn("control socket accept failing; retrying", "err", err)
				failed, recovered = 0, false
			}
			failed++
			lastFailure = time.Now()
			delay = min(max(2*delay, minAcceptDelay), maxAcceptDelay)
			select {
			case <-time.After(delay):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		if failed > 0 && !recovered {
			s.log.Info("control socket accepting again", "failed_accepts", failed)
			recovered = true
		}
		select {
		case s.slots <- struct{}{}:
			busy = 0
		default:
			if busy == 0 {
				s.log.Warn("too many control connections; answering busy", "limit", maxConns)
			}
			busy++
			refuse(c, fmt.Sprintf("sockshim is busy: %d control connections are open; try again", maxConns))
			continue
		}
		if !s.track() {
			c.Close()
			return
		}
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			s.serveConn(c, h)
		}()
	}
}

// track counts a new goroutine for Close to wait for, unless Close has
// begun.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// transient reports whether an accept error passes once descriptors or
// memory are freed, or concerns only the connection that failed.
func transient(err error) bool {
	for _, e := range []syscall.Errno{unix.EMFILE, unix.ENFILE, unix.ECONNABORTED, unix.ENOBUFS, unix.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// refuse answers c with an error and closes it.
func refuse(c net.Conn, msg string) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	json.NewEncoder(c).Encode(Reply{Done: true, Error: msg})
	c.Close()
}

// Close stops accepting, removes the socket file, ends every conversation
// (their handlers' contexts are canceled) and waits for them to return.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.ln.Close()
	s.cancel()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		// Serve closed it already.
		err = nil
	}
	return err
}

func (s *Server) serveConn(c *net.UnixConn, h Handler) {
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil {
		s.log.Warn("control connection without credentials refused", "err", err)
		return
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		s.log.Warn("control connection refused", "peer_pid", cred.Pid, "peer_uid", cred.Uid)
		refuse(c, fmt.Sprintf("uid %d may not control this sockshim (only root and uid %d)", cred.Uid, os.Getuid()))
		return
	}
	// The conversation ends when Close is called or the client hangs up
	// (say, systemctl reload timed out): every read and write on c then
	// fails at once, and the handler's ctx is done. A reload the
	// conversation started still runs to its end.
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })

	c.SetReadDeadline(time.Now().Add(s.requestTimeout))
	req, err := readRequest(c)
	if ctx.Err() != nil {
		return
	}
	switch {
	case errors.Is(err, io.EOF):
		s.log.Debug("control connection closed without a request", "peer_pid", cred.Pid)
		return
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("no request within %s", s.requestTimeout)
		fallthrough
	case err != nil:
		s.log.Warn("malformed control request", "peer_pid", cred.Pid, "err", err)
		refuse(c, err.Error())
		return
	}
	c.SetReadDeadline(time.Time{})
	if s.track() {
		go func() {
			defer s.wg.Done()
			// Clients send nothing after the request: a read returns
			// only when the client hangs up (or c is closed).
			io.Copy(io.Discard, c)
			cancel()
		}()
	}
	enc := json.NewEncoder(c)
	switch req.Command {
	case "reload":
		s.log.Info("reload requested", "via", "control socket", "peer_pid", cred.Pid)
		msg, err := h.Reload(ctx, func(p string) { enc.Encode(Reply{Progress: p}) })
		final := Reply{Done: true, Message: msg}
		if err != nil {
			final.Error = err.Error()
		}
		enc.Encode(final)
	case "status":
		st, err := h.Status(ctx)
		final := Reply{Done: true, Status: &st}
		if err != nil {
			final = Reply{Done: true, Error: err.Error()}
		}
		enc.Encode(final)
	default:
		enc.Encode(Reply{Done: true, Error: fmt.Sprintf("unknown command %q", req.Command)})
	}
}

// peerCred returns the credentials of the process at the other end of c:
// the client for a server, the process that called listen for a client.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}
