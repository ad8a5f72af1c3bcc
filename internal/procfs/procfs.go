// Package procfs reads what sockshim and its tests need to know about
// processes from /proc: state, parent, process group and open descriptors.
package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is the part of /proc/PID/stat that is read here.
type Stat struct {
	State byte // 'R', 'S', 'Z', …
	PPID  int
	PGID  int
}

// ReadStat parses /proc/PID/stat. The command name is in parentheses and
// may itself contain spaces and parentheses, so fields are taken after the
// last ')'.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	// After the name: state ppid pgrp …
	f := strings.Fields(s[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
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
	return Stat{State: f[0][0], PPID: ppid, PGID: pgid}, nil
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
