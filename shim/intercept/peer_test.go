package intercept

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// sockaddr builds the bytes of a struct sockaddr as a program passes them.
func sockaddr(family uint16, rest ...byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, family)
	return append(b, rest...)
}

func in4(port uint16, a, b, c, d byte) []byte {
	return append(sockaddr(unix.AF_INET, byte(port>>8), byte(port), a, b, c, d), make([]byte, 8)...)
}

func in6(port uint16, addr [16]byte, scope bool) []byte {
	b := sockaddr(unix.AF_INET6, byte(port>>8), byte(port), 0, 0, 0, 0)
	b = append(b, addr[:]...)
	if scope {
		b = append(b, 0, 0, 0, 0)
	}
	return b
}

func TestParseSockaddr(t *testing.T) {
	cwd := func() (string, error) { return "/srv/app", nil }
	noCwd := func() (string, error) { return "", errors.New("gone") }
	loop6 := [16]byte{15: 1}
	for _, c := range []struct {
		name  string
		proto string
		sa    []byte
		cwd   func() (string, error)
		want  string // Endpoint.String(), or "" for not ok
	}{
		{"tcp4", "TCP", in4(8080, 127, 0, 0, 1), cwd, "tcp://127.0.0.1:8080"},
		{"udp4", "UDP", in4(53, 0, 0, 0, 0), cwd, "udp://0.0.0.0:53"},
		{"tcp6 with scope id", "TCPv6", in6(443, loop6, true), cwd, "tcp://[::1]:443"},
		{"tcp6 RFC 2133 length", "TCPv6", in6(443, loop6, false), cwd, "tcp://[::1]:443"},
		{"tcp4 too short", "TCP", in4(8080, 127, 0, 0, 1)[:15], cwd, ""},
		{"tcp6 too short", "TCPv6", in6(443, loop6, false)[:23], cwd, ""},
		{"ipv4 address on an ipv6 socket", "TCPv6", in4(8080, 127, 0, 0, 1), cwd, ""},
		{"ipv6 address on an ipv4 socket", "TCP", in6(443, loop6, true), cwd, ""},
		{"unix path", "UNIX-STREAM", sockaddr(unix.AF_UNIX, []byte("/run/a.sock\x00junk")...), cwd, "unix:/run/a.sock"},
		{"unix path without NUL", "UNIX-STREAM", sockaddr(unix.AF_UNIX, []byte("/run/a.sock")...), cwd, "unix:/run/a.sock"},
		{"unix relative path", "UNIX-STREAM", sockaddr(unix.AF_UNIX, []byte("run/a.sock\x00")...), cwd, "unix:/srv/app/run/a.sock"},
		{"unix relative path, cwd unknown", "UNIX-STREAM", sockaddr(unix.AF_UNIX, []byte("a.sock\x00")...), noCwd, ""},
		{"unix abstract", "UNIX", sockaddr(unix.AF_UNIX, []byte("\x00name")...), cwd, "unixgram:@name"},
		{"unix autobind", "UNIX-STREAM", sockaddr(unix.AF_UNIX), cwd, ""},
		{"family only", "TCP", sockaddr(unix.AF_INET), cwd, ""},
		{"empty", "TCP", nil, cwd, ""},
		{"other family", "TCP", append(sockaddr(unix.AF_PACKET), make([]byte, 16)...), cwd, ""},
	} {
		e, ok := protoEndpoint(c.proto)
		if !ok {
			t.Fatalf("%s: protocol %q unknown", c.name, c.proto)
		}
		got, ok := parseSockaddr(e, c.sa, c.cwd)
		switch {
		case c.want == "" && ok:
			t.Errorf("%s: parsed as %s, want refused", c.name, got)
		case c.want != "" && !ok:
			t.Errorf("%s: refused, want %s", c.name, c.want)
		case ok && got.String() != c.want:
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	for _, p := range []string{"MPTCP", "SCTP", "RAW", "PING", "UDPLITE", ""} {
		if _, ok := protoEndpoint(p); ok {
			t.Errorf("protocol %q accepted", p)
		}
	}
}

// FuzzParseSockaddr: whatever a worker passes to bind, parsing it neither
// panics nor yields an endpoint of another family than its socket's.
func FuzzParseSockaddr(f *testing.F) {
	f.Add("TCP", in4(8080, 127, 0, 0, 1))
	f.Add("TCPv6", in6(443, [16]byte{15: 1}, true))
	f.Add("UNIX-STREAM", sockaddr(unix.AF_UNIX, []byte("rel/a.sock\x00")...))
	f.Add("UNIX", sockaddr(unix.AF_UNIX, 0, 'x'))
	f.Fuzz(func(t *testing.T, proto string, sa []byte) {
		e, ok := protoEndpoint(proto)
		if !ok || len(sa) > maxSockaddr {
			return
		}
		got, ok := parseSockaddr(e, sa, func() (string, error) { return "/cwd", nil })
		if !ok {
			return
		}
		if got.Family != e.Family || got.Kind != e.Kind {
			t.Fatalf("%q %x: endpoint %+v changed family or kind", proto, sa, got)
		}
		if got.Family == Unix && (got.Path == "" || got.Path[0] != '/' && got.Path[0] != '@') {
			t.Fatalf("%q %x: unix path %q is neither absolute nor abstract", proto, sa, got.Path)
		}
	})
}
