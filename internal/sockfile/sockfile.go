// Package sockfile decides whether a unix socket file left at a path may be
// replaced: the one rule shared by the control socket and [[listen]]
// entries.
package sockfile

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// RemoveStale deletes the socket file at path if nobody answers on it, so
// that the caller can bind there; typ is the socket type (unix.SOCK_STREAM,
// SOCK_DGRAM, SOCK_SEQPACKET) to probe with. A missing file is fine. A live
// socket is never removed: the error names the process that answers and
// the owner of the file. Anything but a socket is left alone too.
func RemoveStale(path string, typ int) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("probe %s: %w", path, err)
	}
	defer unix.Close(fd)
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	switch {
	case err == nil || errors.Is(err, syscall.EAGAIN):
		// EAGAIN: a stream listener whose accept queue is full.
		return fmt.Errorf("%s is in use by another process: %s", path, describe(fd, typ, fi))
	case errors.Is(err, syscall.ECONNREFUSED):
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove stale socket: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("probe %s: %w", path, err)
	}
}

// describe says who answers on the probe fd and who owns the socket file.
// Only connection-oriented sockets carry the peer's credentials.
func describe(fd, typ int, fi os.FileInfo) string {
	owner := "the socket file belongs to uid ?"
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = "the socket file belongs to uid " + strconv.Itoa(int(st.Uid))
	}
	if typ == unix.SOCK_DGRAM {
		return owner
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil || cred.Pid == 0 {
		// Not connected (queue full), or a process in another pid
		// namespace.
		return "its process is unknown; " + owner
	}
	return fmt.Sprintf("%s (pid %d, uid %d) answers; %s", Command(int(cred.Pid)), cred.Pid, cred.Uid, owner)
}

// Command is the name of process pid as /proc/PID/comm gives it, or
// "process" when it cannot be read.
func Command(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "process"
	}
	return strconv.Quote(strings.TrimSpace(string(b)))
}
