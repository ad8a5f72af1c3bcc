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
	conn := listenNotify(t, path)
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

// TestPack: how a message joins the unsent ones. Messages are written as
// their lines joined by spaces, the queue as messages joined by " | ".
func TestPack(t *testing.T) {
	for _, c := range []struct{ queue, msg, want string }{
		{"", "READY=1 STATUS=a", "READY=1 STATUS=a"},
		{"STATUS=a EXTEND_TIMEOUT_USEC=1", "STATUS=b", "EXTEND_TIMEOUT_USEC=1 STATUS=b"},
		{"WATCHDOG=1", "EXTEND_TIMEOUT_USEC=2", "WATCHDOG=1 EXTEND_TIMEOUT_USEC=2"},
		// a newer status line joins the state change still waiting
		{"RELOADING=1 STATUS=a MONOTONIC_USEC=5", "STATUS=b", "RELOADING=1 MONOTONIC_USEC=5 STATUS=b"},
		// but a time extension does not: systemd would apply it to the next state
		{"READY=1 STATUS=a", "EXTEND_TIMEOUT_USEC=1", "READY=1 STATUS=a | EXTEND_TIMEOUT_USEC=1"},
		{"READY=1 STATUS=a", "STATUS=b EXTEND_TIMEOUT_USEC=1", "READY=1 STATUS=a | STATUS=b EXTEND_TIMEOUT_USEC=1"},
		// a state change's own status line supersedes a waiting one
		{"STATUS=a", "READY=1 STATUS=b", "READY=1 STATUS=b"},
		{"STATUS=a EXTEND_TIMEOUT_USEC=1", "READY=1 STATUS=b", "EXTEND_TIMEOUT_USEC=1 | READY=1 STATUS=b"},
		{"STATUS=a", "STOPPING=1", "STATUS=a | STOPPING=1"},
		// two state changes stay two datagrams
		{"RELOADING=1 STATUS=a", "READY=1 STATUS=b", "RELOADING=1 STATUS=a | READY=1 STATUS=b"},
		{"READY=1 STATUS=a | STATUS=b", "STATUS=c", "READY=1 STATUS=a | STATUS=c"},
	} {
		var queue [][]string
		if c.queue != "" {
			for _, m := range strings.Split(c.queue, " | ") {
				queue = append(queue, strings.Fields(m))
			}
		}
		var got []string
		for _, m := range pack(queue, strings.Fields(c.msg)) {
			got = append(got, strings.Join(m, " "))
		}
		if g := strings.Join(got, " | "); g != c.want {
			t.Errorf("pack(%q, %q) = %q, want %q", c.queue, c.msg, g, c.want)
		}
	}
}

// TestUpstreamHoldsProgress: with a gap too long to pass during the test,
// progress after a datagram waits, newest value per key; a state change
// behind it or a watchdog keep-alive sends it at once, and Flush sends what
// still waits.
func TestUpstreamHoldsProgress(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn := listenNotify(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	u := NewUpstream(slog.New(slog.NewTextHandler(io.Discard, nil)))
	u.gap = time.Hour
	read := func() string { return readNotify(t, conn) }
	quiet := func() {
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := conn.Read(make([]byte, 512)); err == nil {
			t.Fatalf("datagram %d bytes long while progress should wait", n)
		}
	}

	u.Send("STATUS=first")
	if got := read(); got != "STATUS=first" {
		t.Fatalf("got %q, want the first progress at once", got)
	}
	for i := range 100 {
		u.Send(fmt.Sprintf("STATUS=step %d", i), "EXTEND_TIMEOUT_USEC=1000000")
	}
	quiet()
	u.Send("READY=1", "STATUS=ready")
	if got := read(); got != "EXTEND_TIMEOUT_USEC=1000000" {
		t.Fatalf("got %q, want the waiting extension without its superseded status", got)
	}
	if got := read(); got != "READY=1\nSTATUS=ready" {
		t.Fatalf("got %q, want READY=1 right behind it", got)
	}
	u.Send("STATUS=draining")
	quiet()
	u.Send("WATCHDOG=1")
	if got := read(); got != "STATUS=draining\nWATCHDOG=1" {
		t.Fatalf("got %q, want the keep-alive at once, with the waiting status", got)
	}
	u.SendAll([][]string{{"STATUS=draining 1"}, {"STATUS=drained"}})
	quiet()
	if !u.Flush(5 * time.Second) {
		t.Fatal("Flush did not send the waiting progress")
	}
	if got := read(); got != "STATUS=drained" {
		t.Fatalf("got %q after Flush, want the newest status", got)
	}
}

// TestUpstreamReconnects: the socket to the manager is kept between
// messages, and when the manager re-creates its notify socket (as
// daemon-reexec does), the next message still arrives, on a new socket.
func TestUpstreamReconnects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	t.Setenv("NOTIFY_SOCKET", path)
	u := NewUpstream(slog.New(slog.NewTextHandler(io.Discard, nil)))
	first := listenNotify(t, path)
	for _, msg := range []string{"STATUS=one", "READY=1"} {
		u.Send(msg)
		if got := readNotify(t, first); got != msg {
			t.Fatalf("got %q, want %q", got, msg)
		}
	}
	first.Close()
	os.Remove(path)
	second := listenNotify(t, path)
	u.Send("RELOADING=1")
	if got := readNotify(t, second); got != "RELOADING=1" {
		t.Fatalf("after the socket was re-created: got %q, want RELOADING=1", got)
	}
}

// listenNotify is a service manager's notify socket at path, closed when
// the test ends.
func listenNotify(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readNotify returns the next datagram on conn, failing the test after 5 s.
func readNotify(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("reading the notify socket: %v", err)
	}
	return string(buf[:n])
}
