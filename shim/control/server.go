package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Handler is what the server asks of the supervisor.
type Handler interface {
	// Reload runs (or joins) a reload and returns when it has ended;
	// progress receives human-readable lines while it runs.
	Reload(ctx context.Context, progress func(string)) (string, error)
	Status(ctx context.Context) (Status, error)
}

// Server accepts control connections.
type Server struct {
	ln   *net.UnixListener
	path string
	log  *slog.Logger
	wg   sync.WaitGroup
}

// Listen creates the control socket at path with mode 0600, creating its
// directory (0755) if needed and replacing a stale socket file.
func Listen(path string, log *slog.Logger) (*Server, error) {
	// sun_path holds 108 bytes with its terminating NUL; bind would only
	// say "invalid argument".
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("control socket path %s is %d bytes, longer than a unix socket address allows (%d); set a shorter [control] socket",
			path, len(path), len(unix.RawSockaddrUnix{}.Path)-1)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	// A directory someone else owns could be swapped under us; the socket
	// file's mode alone would not protect it.
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Getuid() {
		return nil, fmt.Errorf("control socket directory %s belongs to uid %d, not to root or sockshim's uid %d", dir, st.Uid, os.Getuid())
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// The umask is process-wide, so the mode is fixed with chmod right after
	// bind; the peer check below makes the short window harmless.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &Server{ln: ln, path: path, log: log}, nil
}

// removeStale deletes a socket file nobody answers on; a live one means
// another supervisor runs with the same config, which is an error.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("control socket %s exists and is not a socket", path)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s is in use: another sockshim runs with this config", path)
	}
	return os.Remove(path)
}

// Path is the socket's file name.
func (s *Server) Path() string { return s.path }

// Serve accepts connections until Close.
func (s *Server) Serve(h Handler) {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("control socket accept failed", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c, h)
		}()
	}
}

// Close stops accepting, removes the socket file and waits for open
// conversations to finish.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) serveConn(c *net.UnixConn, h Handler) {
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil {
		s.log.Warn("control connection without credentials refused", "err", err)
		return
	}
	enc := json.NewEncoder(c)
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		s.log.Warn("control connection refused", "peer_pid", cred.Pid, "peer_uid", cred.Uid)
		enc.Encode(Reply{Done: true, Error: fmt.Sprintf("uid %d may not control this sockshim (only root and uid %d)", cred.Uid, os.Getuid())})
		return
	}
	var req Request
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	if err != nil {
		s.log.Warn("malformed control request", "peer_pid", cred.Pid, "err", err)
		enc.Encode(Reply{Done: true, Error: "malformed request: " + err.Error()})
		return
	}
	// The conversation ends early if the client goes away (say, systemctl
	// reload timed out); a reload it started still runs to its end.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
