package notify

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestUpstreamNeverBlocks: with a NOTIFY_SOCKET nobody reads, Send still
// returns at once; once the reader catches up, every state change arrives in
// order and the progress messages queued behind them arrive merged.
func TestUpstreamNeverBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	u := NewUpstream(slog.New(slog.NewTextHandler(io.Discard, nil)))

	const steps = 1000
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range steps {
			u.Send(fmt.Sprintf("STATUS=step %d", i), "EXTEND_TIMEOUT_USEC=1000000")
			if i%100 == 99 {
				u.Send("READY=1", fmt.Sprintf("STATUS=ready %d", i))
			}
		}
	}()
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("Send blocked on a NOTIFY_SOCKET nobody reads")
	}

	var got []string
	buf := make([]byte, 8192)
	for {
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			break
		}
		got = append(got, string(buf[:n]))
	}
	if !u.Flush(5 * time.Second) {
		t.Fatal("Flush: queue not drained after the reader caught up")
	}

	var readies []string
	for _, m := range got {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "STATUS=ready") {
				readies = append(readies, l)
			}
		}
		if strings.Contains(m, "READY=1") != strings.Contains(m, "STATUS=ready") {
			t.Errorf("READY=1 and its STATUS split or mixed up: %q", m)
		}
	}
	var want []string
	for i := 99; i < steps; i += 100 {
		want = append(want, fmt.Sprintf("STATUS=ready %d", i))
	}
	if !slices.Equal(readies, want) {
		t.Errorf("state changes: got %q, want %q", readies, want)
	}
	if last := got[len(got)-1]; !strings.Contains(last, fmt.Sprintf("STATUS=step %d", steps-1)) && !strings.Contains(last, fmt.Sprintf("STATUS=ready %d", steps-1)) {
		t.Errorf("last message %q is not the latest state", last)
	}
	// Before the sender blocked, at most the receive queue's length went out
	// one by one; after that, only the 10 state changes and one merged
	// progress message before and after each.
	qlen := 10
	if b, err := os.ReadFile("/proc/sys/net/unix/max_dgram_qlen"); err == nil {
		qlen, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if limit := qlen + 1 + 2*steps/100 + 1; len(got) > limit {
		t.Errorf("%d datagrams for %d progress messages: merging should keep them at %d or fewer", len(got), steps, limit)
	}
	for _, m := range got {
		if strings.Count(m, "STATUS=") > 1 || strings.Count(m, "EXTEND_TIMEOUT_USEC=") > 1 {
			t.Errorf("merged message repeats a key: %q", m)
		}
	}
}

// TestUpstreamDisabled: without NOTIFY_SOCKET nothing is queued or sent.
func TestUpstreamDisabled(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	u := NewUpstream(slog.Default())
	u.Send("READY=1")
	if u.Enabled() || !u.Flush(0) {
		t.Fatal("an upstream without NOTIFY_SOCKET must be a no-op")
	}
}

func TestMerge(t *testing.T) {
	got := merge([]string{"STATUS=a", "WATCHDOG=1"}, []string{"EXTEND_TIMEOUT_USEC=5", "STATUS=b"})
	want := []string{"WATCHDOG=1", "EXTEND_TIMEOUT_USEC=5", "STATUS=b"}
	if !slices.Equal(got, want) {
		t.Fatalf("merge: got %q, want %q", got, want)
	}
	if progressOnly([]string{"STATUS=x", "READY=1"}) || !progressOnly([]string{"STATUS=x", "WATCHDOG=1"}) {
		t.Fatal("progressOnly misclassifies")
	}
}

// TestUpstreamReconnects: the socket to the manager is kept between
// messages, and when the manager re-creates its notify socket (as
// daemon-reexec does), the next message still arrives, on a new socket.
func TestUpstreamReconnects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	listen := func() *net.UnixConn {
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	read := func(conn *net.UnixConn) string {
		buf := make([]byte, 512)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("reading the notify socket: %v", err)
		}
		return string(buf[:n])
	}
	t.Setenv("NOTIFY_SOCKET", path)
	u := NewUpstream(slog.New(slog.NewTextHandler(io.Discard, nil)))
	first := listen()
	for _, msg := range []string{"STATUS=one", "READY=1"} {
		u.Send(msg)
		if got := read(first); got != msg {
			t.Fatalf("got %q, want %q", got, msg)
		}
	}
	first.Close()
	os.Remove(path)
	second := listen()
	defer second.Close()
	u.Send("RELOADING=1")
	if got := read(second); got != "RELOADING=1" {
		t.Fatalf("after the socket was re-created: got %q, want RELOADING=1", got)
	}
}
