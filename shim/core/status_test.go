package core

import "testing"

// A worker's STATUS= reaches root's terminal through `sockshim status`: no
// control character may pass, and the text is bounded.
func TestPrintable(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"serving 12 req/s", "serving 12 req/s"},
		{"\x1b]0;pwned\a\x1b[2J\x1b[31mfake: all good\r", `\x1b]0;pwned\x07\x1b[2J\x1b[31mfake: all good `},
		{"tab\tand\nnewline", "tab and newline"},
		{"bidi \u202e override", `bidi \u202e override`},
		{"C1 \u009b csi", `C1 \x9b csi`},
		{"bad \xff utf-8", "bad \uFFFD utf-8"},
		{"héllo wörld", "héllo wörld"},
	} {
		if got := printable(c.in, 100); got != c.want {
			t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := printable("abcdef", 3); got != "abc…" {
		t.Errorf("printable capped at 3 = %q, want %q", got, "abc…")
	}
}
