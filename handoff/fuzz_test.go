package handoff

import (
	"errors"
	"testing"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// FuzzDecode feeds arbitrary payloads to the decoder: it must never panic,
// and whatever it accepts must be self-consistent and re-encode to the same
// bytes.
func FuzzDecode(f *testing.F) {
	f.Add(encode(0, 0, nil))
	f.Add(encode(1, 0, []string{"http"}))
	f.Add(encode(300, 253, names(47, 253)))
	f.Add([]byte("SKSH\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decode(b)
		if err != nil {
			return
		}
		if h.first+len(h.names) > h.total || h.total > MaxSockets || len(h.names) > MaxFDsPerMessage {
			t.Fatalf("accepted inconsistent header %+v", h)
		}
		for _, n := range h.names {
			if CheckName(n) != nil {
				t.Fatalf("accepted bad name %q", n)
			}
		}
		if again := encode(h.total, h.first, h.names); string(again) != string(b) {
			t.Fatalf("decode/encode mismatch")
		}
	})
}
