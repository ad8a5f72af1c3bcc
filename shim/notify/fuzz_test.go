package notify

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse checks Parse against the format it documents: an accepted
// datagram is at most MaxDatagram bytes and each of its non-empty lines is
// exactly one field, split at the first '=', with a non-empty key and no NUL;
// a rejected one yields no fields and a printable error.
func FuzzParse(f *testing.F) {
	// More seeds are in testdata/fuzz/FuzzParse. Inputs near MaxDatagram
	// are left to TestParseSizeLimit: the fuzzer spends its time minimizing
	// inputs that large.
	f.Add([]byte("READY=1\nSTATUS=serving v2\nMAINPID=4242\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if m.Fields != nil || m.PID != 0 {
				t.Fatalf("rejected %q with a non-empty message %+v", b, m)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("error is not valid UTF-8: %q", err.Error())
			}
			return
		}
		if len(b) > MaxDatagram {
			t.Fatalf("accepted %d bytes, more than MaxDatagram", len(b))
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" {
				lines = append(lines, l)
			}
		}
		if len(m.Fields) != len(lines) {
			t.Fatalf("%d fields from %d non-empty lines of %q", len(m.Fields), len(lines), b)
		}
		last := map[string]string{}
		for i, fl := range m.Fields {
			if fl.Key == "" || strings.ContainsAny(fl.Key, "=\n\x00") || strings.ContainsAny(fl.Value, "\n\x00") {
				t.Fatalf("accepted bad field %q", fl)
			}
			if fl.Key+"="+fl.Value != lines[i] {
				t.Fatalf("field %q is not line %q", fl, lines[i])
			}
			last[fl.Key] = fl.Value
		}
		// Get is linear; checking it for every key would make large
		// inputs quadratic.
		keys := []string{"READY", "STATUS"}
		if n := len(m.Fields); n > 0 {
			keys = append(keys, m.Fields[0].Key, m.Fields[n-1].Key)
		}
		for _, k := range keys {
			want, present := last[k]
			if v, ok := m.Get(k); v != want || ok != present {
				t.Fatalf("Get(%q) = %q, %v; want the last value %q, %v", k, v, ok, want, present)
			}
		}
		if m.Ready() != (last["READY"] == "1") {
			t.Fatalf("Ready() = %v for %q", m.Ready(), b)
		}
	})
}

// TestParseSizeLimit: a datagram of MaxDatagram bytes parses, one more byte
// is rejected.
func TestParseSizeLimit(t *testing.T) {
	line := []byte("STATUS=" + string(bytes.Repeat([]byte("x"), 56)) + "\n") // 64 bytes
	full := bytes.Repeat(line, MaxDatagram/len(line))
	if len(full) != MaxDatagram {
		t.Fatalf("built %d bytes, want %d", len(full), MaxDatagram)
	}
	m, err := Parse(full)
	if err != nil || len(m.Fields) != MaxDatagram/len(line) {
		t.Fatalf("%d bytes: %d fields, %v; want %d fields", len(full), len(m.Fields), err, MaxDatagram/len(line))
	}
	over := append(full, '\n')
	want := fmt.Sprintf("notify datagram of %d bytes exceeds %d", MaxDatagram+1, MaxDatagram)
	if _, err := Parse(over); err == nil || err.Error() != want {
		t.Fatalf("%d bytes: %v, want %q", len(over), err, want)
	}
}
