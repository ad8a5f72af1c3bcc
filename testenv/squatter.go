package testenv

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// NobodyDir returns a fresh directory owned by nobody (mode 0700) inside one
// every user may traverse: where another local user could put a socket.
// It needs root.
func NobodyDir(t testing.TB) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("testenv: acting as another user needs root")
	}
	dir, err := os.MkdirTemp("", "sockshim-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "nobody")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sub, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return sub
}

// FakeControlServer runs, as nobody, a unix socket server that answers every
// connection with one successful reload reply, as a squatter would. It binds
// path itself, or listens on bound when that is not nil. It returns once the
// server accepts.
func FakeControlServer(t testing.TB, path string, bound *os.File) {
	t.Helper()
	const script = `
import socket, sys
if sys.argv[1] == "fd:3":
    s = socket.socket(fileno=3)
else:
    s = socket.socket(socket.AF_UNIX)
    s.bind(sys.argv[1])
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b'{"done":true,"message":"generation 42 serving"}\n')
    c.close()
`
	cmd := exec.Command("runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", script, path)
	if bound != nil {
		cmd.Args[len(cmd.Args)-1] = "fd:3"
		cmd.ExtraFiles = []*os.File{bound}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("testenv: fake control server as nobody: %q %v", line, err)
	}
}
