package intercept

import (
	"net/netip"
	"testing"
)

func tcp(addr string) Endpoint  { return inet(Stream, addr, false) }
func tcp6(addr string) Endpoint { return inet(Stream, addr, true) }
func udp(addr string) Endpoint  { return inet(Datagram, addr, false) }

// inet is an endpoint of addr's family; v6only matters for held sockets.
func inet(k Kind, addr string, v6only bool) Endpoint {
	ap := netip.MustParseAddrPort(addr)
	f := Inet4
	if ap.Addr().Is6() {
		f = Inet6
	}
	return Endpoint{Family: f, Kind: k, Addr: ap, V6Only: v6only}
}

func unixEP(k Kind, path string) Endpoint { return Endpoint{Family: Unix, Kind: k, Path: path} }

func TestMatch(t *testing.T) {
	held := []Endpoint{
		tcp("127.0.0.1:8080"),              // 0
		tcp("0.0.0.0:8081"),                // 1
		inet(Stream, "[::]:8082", false),   // 2: dual-stack
		tcp6("[::]:8083"),                  // 3: IPv6 only
		udp("127.0.0.1:8080"),              // 4: same port as 0, datagram
		tcp("127.0.0.1:8084"),              // 5
		tcp("0.0.0.0:8084"),                // 6: wildcard of 5's port
		unixEP(Stream, "/run/app.sock"),    // 7
		unixEP(SeqPacket, "/run/pkt.sock"), // 8
		unixEP(Stream, "@abstract"),        // 9
		inet(Stream, "[::]:8085", false),   // 10: dual-stack …
		tcp("0.0.0.0:8085"),                // 11: … and an IPv4 wildcard of the same port
	}
	for _, c := range []struct {
		name string
		bind Endpoint
		want Decision
	}{
		{"exact tcp4", tcp("127.0.0.1:8080"), Decision{HandOver, 0}},
		{"exact udp on a port tcp holds too", udp("127.0.0.1:8080"), Decision{HandOver, 4}},
		{"ipv4 wildcard held, specific bind", tcp("127.0.0.1:8081"), Decision{HandOver, 1}},
		{"ipv4 wildcard held, wildcard bind", tcp("0.0.0.0:8081"), Decision{HandOver, 1}},
		{"dual-stack held, ipv6 wildcard bind", inet(Stream, "[::]:8082", false), Decision{HandOver, 2}},
		{"dual-stack held, ipv6 loopback bind", tcp6("[::1]:8082"), Decision{HandOver, 2}},
		{"dual-stack held, ipv4 bind", tcp("0.0.0.0:8082"), Decision{HandOver, 2}},
		{"ipv6-only held, ipv4 bind", tcp("0.0.0.0:8083"), Decision{NearMiss, 0}},
		{"ipv6-only held, ipv6 bind", tcp6("[::]:8083"), Decision{HandOver, 3}},
		{"exact beats wildcard", tcp("127.0.0.1:8084"), Decision{HandOver, 5}},
		{"wildcard serves another address", tcp("127.0.0.2:8084"), Decision{HandOver, 6}},
		{"same family beats dual-stack", tcp("127.0.0.1:8085"), Decision{HandOver, 11}},
		{"specific held, wildcard bind", tcp("0.0.0.0:8080"), Decision{NearMiss, 0}},
		{"specific held, other address", tcp("127.0.0.2:8080"), Decision{NearMiss, 0}},
		{"ipv4 held, ipv6 bind", tcp6("[::1]:8080"), Decision{NearMiss, 0}},
		{"v4-mapped ipv6 against ipv4", tcp6("[::ffff:127.0.0.1]:8080"), Decision{NearMiss, 0}},
		{"udp where only tcp is held", udp("127.0.0.1:8081"), Decision{Proceed, 0}},
		{"port 0", tcp("127.0.0.1:0"), Decision{Proceed, 0}},
		{"port 0 wildcard", tcp("0.0.0.0:0"), Decision{Proceed, 0}},
		{"unrelated port", tcp("127.0.0.1:9999"), Decision{Proceed, 0}},
		{"unix stream", unixEP(Stream, "/run/app.sock"), Decision{HandOver, 7}},
		{"unix datagram name on a seqpacket path", unixEP(Datagram, "/run/pkt.sock"), Decision{HandOver, 8}},
		{"unix datagram on a stream path", unixEP(Datagram, "/run/app.sock"), Decision{Proceed, 0}},
		{"unix other path", unixEP(Stream, "/run/other.sock"), Decision{Proceed, 0}},
		{"abstract", unixEP(Stream, "@abstract"), Decision{HandOver, 9}},
		{"abstract is not a file", unixEP(Stream, "/abstract"), Decision{Proceed, 0}},
		{"unix without a name", unixEP(Stream, ""), Decision{Proceed, 0}},
	} {
		if got := Match(c.bind, held); got != c.want {
			t.Errorf("%s: Match(%s) = %+v, want %+v", c.name, c.bind, got, c.want)
		}
	}
	if got := Match(tcp("127.0.0.1:8080"), nil); got.Verdict != Proceed {
		t.Errorf("no held socket: %+v", got)
	}
}

func TestEndpointString(t *testing.T) {
	for _, c := range []struct {
		e    Endpoint
		want string
	}{
		{tcp("127.0.0.1:8080"), "tcp://127.0.0.1:8080"},
		{tcp6("[::1]:80"), "tcp://[::1]:80"},
		{udp("0.0.0.0:53"), "udp://0.0.0.0:53"},
		{unixEP(Stream, "/run/a.sock"), "unix:/run/a.sock"},
		{unixEP(Datagram, "@x"), "unixgram:@x"},
		{unixEP(SeqPacket, "/p"), "unixpacket:/p"},
	} {
		if got := c.e.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.e, got, c.want)
		}
	}
}
