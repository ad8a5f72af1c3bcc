package notify

import (
	"fmt"
	"strings"
)

// MaxDatagram is the largest notify datagram the proxy accepts. systemd drops
// anything larger than its own buffer (4 KiB in practice); we are a little more
// lenient towards workers but never unbounded.
const MaxDatagram = 16 * 1024

// Message is one parsed notify datagram.
type Message struct {
	// PID is the sender's pid, from SCM_CREDENTIALS (0 if the kernel gave none).
	PID int
	// Fields holds the assignments in the order received; a later duplicate
	// key overrides an earlier one in Get.
	Fields []Field
}

// Field is one KEY=VALUE line of a notify datagram.
type Field struct{ Key, Value string }

// Get returns the last value of key and whether it was present.
func (m Message) Get(key string) (string, bool) {
	for i := len(m.Fields) - 1; i >= 0; i-- {
		if m.Fields[i].Key == key {
			return m.Fields[i].Value, true
		}
	}
	return "", false
}

// Ready reports whether the message carries READY=1.
func (m Message) Ready() bool { v, ok := m.Get("READY"); return ok && v == "1" }

// Parse decodes a datagram of newline-separated KEY=VALUE assignments, the
// format sd_notify(3) defines. Empty lines are ignored; a line without '=' or
// with an empty key is an error, as systemd rejects those too.
func Parse(b []byte) (Message, error) {
	var m Message
	if len(b) > MaxDatagram {
		return m, fmt.Errorf("notify datagram of %d bytes exceeds %d", len(b), MaxDatagram)
	}
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || key == "" {
			return Message{}, fmt.Errorf("notify datagram line %d: %q is not KEY=VALUE", i+1, truncate(line, 64))
		}
		if strings.ContainsRune(key, 0) || strings.ContainsRune(value, 0) {
			return Message{}, fmt.Errorf("notify datagram line %d: NUL byte", i+1)
		}
		m.Fields = append(m.Fields, Field{Key: key, Value: value})
	}
	return m, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
