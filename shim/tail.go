package shim

import (
	"bufio"
	"io"
	"sync"
)

// tailLines is how many of a worker's last stderr lines are kept for error
// messages ("worker web[0] exited with status 1: <last lines>").
const tailLines = 10

// stderrTail copies a worker's stderr to sockshim's own, line by line so that
// lines of concurrent workers do not interleave mid-line, and remembers the
// last few lines.
type stderrTail struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func newStderrTail(r io.ReadCloser, out io.Writer) *stderrTail {
	t := &stderrTail{done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer r.Close()
		br := bufio.NewReaderSize(r, 64*1024)
		for {
			line, err := br.ReadSlice('\n')
			if len(line) > 0 {
				out.Write(line)
				t.remember(line)
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				return
			}
		}
	}()
	return t
}

func (t *stderrTail) remember(line []byte) {
	s := string(line)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	if s == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == tailLines {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:tailLines-1]
	}
	t.lines = append(t.lines, s)
}

// Lines returns a copy of the remembered lines.
func (t *stderrTail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}
