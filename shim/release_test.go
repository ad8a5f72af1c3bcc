package shim

import (
	"net"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/sockshim/sockshim/handoff"
)

// startHolder starts `sh -c 'sleep 60 & exec sleep 60'` with the socket at
// fd 3, in a process group of its own: two processes that hold the socket,
// as a server and the child it forked would.
func startHolder(t *testing.T, f *os.File) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "sleep 60 & exec sleep 60")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return cmd
}

func TestAwaitRelease(t *testing.T) {
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
	ids, err := socketIDs([]handoff.Socket{{Name: "http", File: f}})
	if err != nil || len(ids) != 1 {
		t.Fatalf("socketIDs: %v %v", ids, err)
	}

	draining := startHolder(t, f)
	other := startHolder(t, f) // another group: not draining, not waited for
	pgid := draining.Process.Pid
	var held []int
	deadline := time.Now().Add(5 * time.Second)
	for len(held) < 2 && time.Now().Before(deadline) {
		// The shell forks its background child a moment after it starts.
		held = holders(groupMembers([]int{pgid}), ids)
		time.Sleep(10 * time.Millisecond)
	}
	if len(held) != 2 || !slices.Contains(held, pgid) {
		t.Fatalf("holders of group %d: %v, want the shell's sleep and its child", pgid, held)
	}
	if slices.Contains(held, other.Process.Pid) {
		t.Errorf("a process of another group counted: %v", held)
	}

	members := func() []int { return groupMembers([]int{pgid}) }
	if got := awaitRelease(members, ids, 50*time.Millisecond); len(got) != 2 {
		t.Errorf("awaitRelease with holders left returned %v", got)
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	start := time.Now()
	if got := awaitRelease(members, ids, 5*time.Second); len(got) != 0 {
		t.Errorf("awaitRelease after the group died returned %v", got)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("awaitRelease took %s to see the group gone", took)
	}
}
