package acceptwait

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/sockshim/sockshim/internal/procfs"
	"golang.org/x/sys/unix"
)

// Report is what Scan saw of the sockets it was asked about, each named as
// /proc/PID/fd links name it ("socket:[INODE]").
type Report struct {
	Held   map[string]bool // open in one of the processes
	Waited map[string]bool // waited on by one of them
}

// Accepting reports whether the processes hold at least one of the sockets
// and wait on every one they hold.
func (r Report) Accepting() bool {
	if len(r.Held) == 0 {
		return false
	}
	for id := range r.Held {
		if !r.Waited[id] {
			return false
		}
	}
	return true
}

// Idle lists the sockets held and not waited on.
func (r Report) Idle() []string {
	var out []string
	for id := range r.Held {
		if !r.Waited[id] {
			out = append(out, id)
		}
	}
	return out
}

// Scan looks at the processes pids for the sockets of interest. A process
// that exits meanwhile is left out; one sockshim may not inspect is an
// error, which says why, since it would otherwise never be seen ready.
func Scan(pids []int, sockets map[string]bool) (Report, error) {
	r := Report{Held: map[string]bool{}, Waited: map[string]bool{}}
	var errs []error
	for _, pid := range pids {
		if err := scanProcess(pid, sockets, &r); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("process %d: %w", pid, err))
		}
	}
	return r, errors.Join(errs...)
}

// gone reports an error that means the process or thread exited while it
// was being read.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH)
}

func scanProcess(pid int, sockets map[string]bool, r *Report) error {
	fds, err := procfs.FDs(pid)
	if err != nil {
		return err
	}
	var epolls []int
	holds := false
	for fd, target := range fds {
		switch {
		case sockets[target]:
			r.Held[target], holds = true, true
		case target == "anon_inode:[eventpoll]":
			epolls = append(epolls, fd)
		}
	}
	if !holds {
		return nil // nothing of interest here, whatever its threads do
	}
	for _, fd := range epolls {
		b, err := procfs.ReadFile("/proc/" + strconv.Itoa(pid) + "/fdinfo/" + strconv.Itoa(fd))
		if err != nil {
			if gone(err) {
				continue // closed meanwhile
			}
			return err
		}
		for _, ino := range epollInputs(b) {
			if id := socketID(ino); sockets[id] {
				r.Waited[id] = true
			}
		}
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return err
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		if err := scanThread(pid, tid, fds, sockets, r); err != nil && !gone(err) {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return nil
}

// scanThread marks the sockets thread tid of pid is blocked waiting on.
// fds is the process's descriptor table, read just before.
func scanThread(pid, tid int, fds map[int]string, sockets map[string]bool, r *Report) error {
	b, err := procfs.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/syscall")
	if err != nil {
		return err
	}
	c, ok := parseSyscall(b)
	if !ok {
		return nil // running, or not in a system call
	}
	var waited []int
	switch callKinds[c.nr] {
	case acceptCall:
		waited = []int{int(int32(c.args[0]))}
	case pollCall:
		waited = pollInputs(tid, uintptr(c.args[0]), c.args[1])
	case selectCall:
		waited = selectInputs(tid, c.args[0], uintptr(c.args[1]))
	}
	for _, fd := range waited {
		if id := fds[fd]; sockets[id] {
			r.Waited[id] = true
		}
	}
	return nil
}

// socketID names a socket's inode as /proc/PID/fd links do.
func socketID(ino uint64) string { return "socket:[" + strconv.FormatUint(ino, 10) + "]" }

// call is a thread's system call as /proc/PID/task/TID/syscall shows it:
// "NR ARG0 … ARG5 SP PC", numbers in hex but NR.
type call struct {
	nr   int64
	args [6]uint64
}

// parseSyscall reads a syscall file. A thread that is running ("running")
// or not in a call ("-1 SP PC") is not waiting: ok is false.
func parseSyscall(b []byte) (c call, ok bool) {
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return call{}, false
	}
	nr, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || nr < 0 {
		return call{}, false
	}
	c.nr = nr
	for i := range c.args {
		v, err := strconv.ParseUint(strings.TrimPrefix(f[1+i], "0x"), 16, 64)
		if err != nil {
			return call{}, false
		}
		c.args[i] = v
	}
	return c, true
}

// epollInputs returns the inodes of an epoll set's targets watched for
// input, from its fdinfo: a line per target,
// "tfd: FD events: MASK data: DATA pos:POS ino:INO sdev:DEV", mask and inode
// in hex.
func epollInputs(fdinfo []byte) []uint64 {
	var out []uint64
	sc := bufio.NewScanner(bytes.NewReader(fdinfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "tfd:" {
			continue
		}
		var events, ino uint64
		var haveEvents, haveIno bool
		for i, field := range f {
			switch {
			case field == "events:" && i+1 < len(f):
				v, err := strconv.ParseUint(f[i+1], 16, 32)
				events, haveEvents = v, err == nil
			case strings.HasPrefix(field, "ino:"):
				v, err := strconv.ParseUint(strings.TrimPrefix(field, "ino:"), 16, 64)
				ino, haveIno = v, err == nil
			}
		}
		if haveEvents && haveIno && events&unix.EPOLLIN != 0 {
			out = append(out, ino)
		}
	}
	return out
}

// maxPollFDs bounds what is read of a poll set; a listener is nearly always
// among a server's first descriptors.
const maxPollFDs = 4096

// pollInputs returns the descriptors of the pollfd array at addr (nfds
// entries) of thread tid that are polled for input; nil when the memory
// cannot be read.
func pollInputs(tid int, addr uintptr, nfds uint64) []int {
	n := int(min(nfds, maxPollFDs))
	if n == 0 {
		return nil
	}
	const size = 8 // struct pollfd: int fd; short events, revents
	b, err := procfs.ReadMemory(tid, addr, n*size)
	if err != nil {
		return nil
	}
	var out []int
	for i := range n {
		e := b[i*size:]
		fd := int(int32(nativeEndian.Uint32(e)))
		if events := nativeEndian.Uint16(e[4:]); fd >= 0 && events&unix.POLLIN != 0 {
			out = append(out, fd)
		}
	}
	return out
}

// selectInputs returns the descriptors below nfds set in the fd_set at addr
// (select's readfds) of thread tid; nil when there is none or it cannot be
// read.
func selectInputs(tid int, nfds uint64, addr uintptr) []int {
	n := int(min(nfds, unix.FD_SETSIZE))
	if n == 0 || addr == 0 {
		return nil
	}
	words := (n + 63) / 64
	b, err := procfs.ReadMemory(tid, addr, words*8)
	if err != nil {
		return nil
	}
	var out []int
	for fd := range n {
		if nativeEndian.Uint64(b[fd/64*8:])&(1<<(fd%64)) != 0 {
			out = append(out, fd)
		}
	}
	return out
}
