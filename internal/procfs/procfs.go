// Package procfs reads what sockshim and its tests need to know about
// processes from /proc: state, parent, process group, open descriptors and,
// with ptrace access, memory.
package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Stat is the part of /proc/PID/stat that is read here.
type Stat struct {
	PID   int
	State byte // 'R', 'S', 'Z', …
	PPID  int
	PGID  int
	// StartTime is when the process started, in clock ticks (USER_HZ)
	// since boot; with the pid it names one process even across pid reuse.
	StartTime uint64
	// CPU is the CPU time the process has used itself (user and system),
	// Reaped that of the children it has waited for, in clock ticks.
	CPU, Reaped uint64
}

// TicksPerSecond is USER_HZ, the unit of Stat's times: 100 on every Linux
// architecture sockshim builds for.
const TicksPerSecond = 100

// ReadStat parses /proc/PID/stat. The command name is in parentheses and
// may itself contain spaces and parentheses, so fields are taken after the
// last ')'.
func ReadStat(pid int) (Stat, error) {
	b, err := ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	// After the name: state ppid pgrp …, starttime is the 20th.
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: ppid: %w", pid, err)
	}
	pgid, err := strconv.Atoi(f[2])
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: pgrp: %w", pid, err)
	}
	// utime, stime, cutime and cstime are the 12th to 15th.
	var times [4]uint64
	for i := range times {
		if times[i], err = strconv.ParseUint(f[11+i], 10, 64); err != nil {
			return Stat{}, fmt.Errorf("/proc/%d/stat: CPU times: %w", pid, err)
		}
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: starttime: %w", pid, err)
	}
	return Stat{PID: pid, State: f[0][0], PPID: ppid, PGID: pgid, StartTime: start, CPU: times[0] + times[1], Reaped: times[2] + times[3]}, nil
}

// Children lists the children of every thread of process pid
// (/proc/PID/task/TID/children; a process's children hang off the thread
// that forked them, or off any thread when they were re-parented to it).
func Children(pid int) ([]int, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, t := range tasks {
		b, err := ReadFile(dir + t.Name() + "/children")
		if err != nil {
			continue // the thread ended
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// Descendants lists the live descendants of process pid, parents before
// their children, each with its stat; zombies and processes that exit while
// it reads are left out.
func Descendants(pid int) []Stat {
	var out []Stat
	queue := []int{pid}
	for len(queue) > 0 {
		kids, _ := Children(queue[0])
		queue = queue[1:]
		for _, c := range kids {
			st, err := ReadStat(c)
			if err != nil || st.State == 'Z' {
				continue
			}
			out = append(out, st)
			queue = append(queue, c)
		}
	}
	return out
}

// Environ returns the environment a process started with
// (/proc/PID/environ), as KEY=VALUE strings.
func Environ(pid int) ([]string, error) {
	b, err := ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return nil, err
	}
	return strings.FieldsFunc(string(b), func(r rune) bool { return r == 0 }), nil
}

// Comm returns a process's command name (/proc/PID/comm).
func Comm(pid int) string {
	b, err := ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// PIDs lists the processes /proc shows.
func PIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// FDs returns a process's open descriptors and what each links to
// ("socket:[INODE]", "pipe:[INODE]", "anon_inode:[pidfd]", a path…).
// Descriptors closed while it reads are left out.
func FDs(pid int) (map[int]string, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[int]string, len(ents))
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink(dir + e.Name()); err == nil {
			out[fd] = target
		}
	}
	return out, nil
}

// ReadMemory copies n bytes at addr of process (or thread) pid, with
// process_vm_readv: it needs ptrace access to pid. What it returns is a
// moment's copy of memory the process may change at any time.
func ReadMemory(pid int, addr uintptr, n int) ([]byte, error) {
	buf := make([]byte, n)
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(n)
	remote := []unix.RemoteIovec{{Base: addr, Len: n}}
	got, err := unix.ProcessVMReadv(pid, local, remote, 0)
	if err != nil {
		return nil, fmt.Errorf("process_vm_readv: %w", err)
	}
	if got != n {
		return nil, fmt.Errorf("process_vm_readv: %d of %d bytes", got, n)
	}
	return buf, nil
}
