package procfs

import (
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
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
	if st.PPID != os.Getpid() || st.PGID != pid || st.State == 'Z' {
		t.Errorf("stat of %d: %+v, want ppid %d, pgid %d, alive", pid, st, os.Getpid(), pid)
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
