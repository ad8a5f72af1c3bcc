package procfs

import (
	"io/fs"

	"golang.org/x/sys/unix"
)

// ReadFile reads a small pseudo-file of /proc or /sys (a cgroup's
// cgroup.events, a process's stat) whole. It is os.ReadFile without the
// *os.File: that one fstats the file for its size, which these files do
// not report, and tries to register it with the runtime's poller, which
// they refuse; sockshim reads such files many times per reload. Errors are
// *fs.PathError, as from os.ReadFile.
func ReadFile(path string) ([]byte, error) {
	fd, err := openRead(path)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 512)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

func openRead(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}
