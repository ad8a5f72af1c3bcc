package intercept

import (
	"net/netip"
	"strings"
)

// Family is a socket's address family.
type Family uint8

// Families.
const (
	Inet4 Family = iota + 1
	Inet6
	Unix
)

// Kind is a socket's type.
type Kind uint8

// Kinds. The kernel names a unix datagram and a unix seqpacket socket alike
// ("UNIX"), so a bind from either kind is Datagram, which matches both.
const (
	Stream Kind = iota + 1
	Datagram
	SeqPacket
)

// Endpoint is what Match compares: a socket's family, kind and address.
type Endpoint struct {
	Family Family
	Kind   Kind
	Addr   netip.AddrPort // Inet4, Inet6
	Path   string         // Unix: a file's absolute path, or "@name" (abstract)
	// V6Only is IPV6_V6ONLY of a held Inet6 socket: without it, a wildcard
	// socket accepts IPv4 connections too.
	V6Only bool
}

// String is the endpoint as an operator writes it in a [[listen]] address.
func (e Endpoint) String() string {
	var network string
	switch {
	case e.Family == Unix:
		network = map[Kind]string{Stream: "unix", Datagram: "unixgram", SeqPacket: "unixpacket"}[e.Kind]
		return network + ":" + e.Path
	case e.Kind == Datagram:
		network = "udp"
	default:
		network = "tcp"
	}
	return network + "://" + e.Addr.String()
}

// Verdict is what to do with a bind.
type Verdict uint8

// Verdicts.
const (
	// Proceed: the bind matches no held socket; the kernel carries it out
	// as the program asked.
	Proceed Verdict = iota
	// HandOver: the worker gets held socket Decision.Socket.
	HandOver
	// NearMiss: like Proceed, but a held socket of the same kind has the
	// same port, so the program probably meant it (an address that is
	// almost right); the operator is told.
	NearMiss
)

// Decision is Match's answer.
type Decision struct {
	Verdict Verdict
	Socket  int // index into held, for HandOver
}

// Match decides what a bind of the endpoint b gets from the held sockets.
//
// The rules, in order of preference when several held sockets match:
//  1. The same family and kind, and the same address: an exact match.
//  2. The same family and kind, a held wildcard (0.0.0.0 or ::) of the same
//     port: the held socket accepts on every address, including the one
//     asked for.
//  3. An IPv4 bind, and a held dual-stack IPv6 wildcard (:: without
//     IPV6_V6ONLY) of the same port, which accepts IPv4 connections too.
//     The worker then holds an IPv6 socket and sees its IPv4 peers as
//     ::ffff:a.b.c.d, as any dual-stack server does.
//
// Among equals, the first held socket wins. A bind to port 0 asks the
// kernel for a port of its choosing and never matches, nor does a wildcard
// bind against a held socket of one address (the program asked for more
// than sockshim holds), nor an IPv6 bind against a held IPv4 socket.
func Match(b Endpoint, held []Endpoint) Decision {
	best, bestRank := -1, 0
	near := false
	for i, h := range held {
		r := rank(b, h)
		if r > bestRank {
			best, bestRank = i, r
		}
		if r == 0 && samePort(b, h) {
			near = true
		}
	}
	switch {
	case best >= 0:
		return Decision{Verdict: HandOver, Socket: best}
	case near:
		return Decision{Verdict: NearMiss}
	}
	return Decision{Verdict: Proceed}
}

// rank is how well held socket h serves bind b: 0 not at all, 3 best.
func rank(b, h Endpoint) int {
	if b.Family == Unix || h.Family == Unix {
		if b.Family == h.Family && kindMatches(b, h) && b.Path != "" && b.Path == h.Path {
			return 3
		}
		return 0
	}
	if b.Kind != h.Kind || b.Addr.Port() == 0 || b.Addr.Port() != h.Addr.Port() {
		return 0
	}
	switch {
	case b.Family == h.Family && b.Addr.Addr() == h.Addr.Addr():
		return 3
	case b.Family == h.Family && h.Addr.Addr().IsUnspecified():
		return 2
	case b.Family == Inet4 && h.Family == Inet6 && h.Addr.Addr().IsUnspecified() && !h.V6Only:
		return 1
	}
	return 0
}

// kindMatches: the same kind, or a unix bind the kernel names "UNIX"
// (Datagram) against a held datagram or seqpacket socket.
func kindMatches(b, h Endpoint) bool {
	return b.Kind == h.Kind || b.Family == Unix && b.Kind == Datagram && h.Kind == SeqPacket
}

// samePort: an inet bind and a held inet socket of the same kind and port
// that rank did not match: the address differs.
func samePort(b, h Endpoint) bool {
	return b.Family != Unix && h.Family != Unix && b.Kind == h.Kind &&
		b.Addr.Port() != 0 && b.Addr.Port() == h.Addr.Port()
}

// endpoints lists held sockets for a log line.
func endpoints(held []Held) string {
	s := make([]string, len(held))
	for i, h := range held {
		s[i] = h.Name + "=" + h.Endpoint.String()
	}
	return strings.Join(s, ", ")
}
