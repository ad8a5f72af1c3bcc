package procfs

import (
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A child with a name that looks like stat fields, in its own process group,
// holding a socket at fd 3.
func TestReadStatAndFDs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exe := t.TempDir() + "/a) b ) c"
	if err := os.Symlink("/bin/sleep", exe); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "30")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid

	st, err := ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != pid || st.PPID != os.Getpid() || st.PGID != pid || st.State == 'Z' {
		t.Errorf("stat of %d: %+v, want pid %[1]d, ppid %d, pgid %[1]d, alive", pid, st, os.Getpid())
	}
	fds, err := FDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(fds[3], "socket:[") {
		t.Errorf("fd 3 of %d is %q, want the socket (all: %v)", pid, fds[3], fds)
	}
	pids, err := PIDs()
	if err != nil || !slices.Contains(pids, pid) || !slices.Contains(pids, os.Getpid()) {
		t.Errorf("PIDs: %v lacks %d or itself (%v)", len(pids), pid, err)
	}
	if _, err := ReadStat(-1); err == nil {
		t.Errorf("ReadStat(-1): want an error")
	}
}

// TestDescendants: a shell and the child it forked, below this process,
// parents first; an exited child that nobody reaped yet is left out.
func TestDescendants(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "sleep 60 & exec sleep 61")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() }()
	zombie := exec.Command("/bin/true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()

	var got []Stat
	deadline := time.Now().Add(5 * time.Second)
	for len(got) != 2 && time.Now().Before(deadline) {
		// The shell forks its background child a moment after it starts,
		// and /bin/true needs a moment to become a zombie.
		time.Sleep(10 * time.Millisecond)
		got = Descendants(os.Getpid())
	}
	if len(got) != 2 || got[0].PID != cmd.Process.Pid || got[1].PPID != cmd.Process.Pid || got[1].PGID != cmd.Process.Pid {
		t.Fatalf("descendants: %+v, want the shell (pid %d) and then its child", got, cmd.Process.Pid)
	}
}

// TestReadStatTimes: the CPU times are this process's own and its reaped
// children's, as getrusage(2) counts them.
func TestReadStatTimes(t *testing.T) {
	burn := exec.Command("/bin/sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done")
	if err := burn.Run(); err != nil {
		t.Fatal(err)
	}
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ticks := func(who int) uint64 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err != nil {
			t.Fatal(err)
		}
		return uint64((ru.Utime.Nano() + ru.Stime.Nano()) * TicksPerSecond / 1e9)
	}
	children := ticks(syscall.RUSAGE_CHILDREN)
	if st.Reaped == 0 || st.Reaped+1 < children || st.Reaped > children+1 {
		t.Errorf("reaped children's CPU: %d ticks, getrusage says %d", st.Reaped, children)
	}
	// Our own keeps running between the two reads: only not beyond.
	if self := ticks(syscall.RUSAGE_SELF); st.CPU > self+1 {
		t.Errorf("own CPU: %d ticks, more than getrusage's %d just after", st.CPU, self)
	}
}
