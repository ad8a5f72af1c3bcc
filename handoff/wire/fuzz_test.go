package wire

import (
	"strconv"
	"testing"
)

// FuzzDecode feeds arbitrary payloads to the decoder: it must never panic,
// and whatever it accepts must be self-consistent and re-encode to the same
// bytes.
func FuzzDecode(f *testing.F) {
	var last47 []string
	for i := range 47 {
		last47 = append(last47, "s"+strconv.Itoa(253+i))
	}
	f.Add(Encode(0, 0, 0, nil))
	f.Add(Encode(FlagInterceptBind, 0, 0, nil))
	f.Add(Encode(0, 1, 0, []string{"http"}))
	f.Add(Encode(0, 300, 253, last47))
	f.Add([]byte("SKSH\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decode(b)
		if err != nil {
			return
		}
		if h.flags&^knownFlags != 0 || h.first+len(h.names) > h.total || h.total > MaxSockets || len(h.names) > MaxFDsPerMessage {
			t.Fatalf("accepted inconsistent header %+v", h)
		}
		for _, n := range h.names {
			if CheckName(n) != nil {
				t.Fatalf("accepted bad name %q", n)
			}
		}
		if again := Encode(h.flags, h.total, h.first, h.names); string(again) != string(b) {
			t.Fatalf("decode/encode mismatch")
		}
	})
}
