package intercept

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/sockshim/sockshim/handoff"
	"golang.org/x/sys/unix"
)

// Held is one socket sockshim holds, as Serve needs it.
type Held struct {
	Name     string
	File     *os.File
	Ino      uint64 // the socket's inode: /proc/PID/fd/N links to socket:[Ino]
	Endpoint Endpoint
	// file is the unix socket's file as Describe found it, to tell when a
	// worker removed it (zero for other sockets, or when it was not there).
	file fileID
}

// fileID tells one file from another.
type fileID struct{ dev, ino uint64 }

func statFile(path string) (fileID, bool) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), st.Ino}, true
}

// Describe reads family, kind, address and inode of each socket. It is
// done once, when sockshim starts: a held socket's address never changes.
func Describe(socks []handoff.Socket) ([]Held, error) {
	out := make([]Held, 0, len(socks))
	for _, s := range socks {
		rc, err := s.File.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("socket %s: %w", s.Name, err)
		}
		h := Held{Name: s.Name, File: s.File}
		var derr error
		if err := rc.Control(func(fd uintptr) { derr = describe(int(fd), &h) }); err != nil {
			return nil, fmt.Errorf("socket %s: %w", s.Name, err)
		}
		if derr != nil {
			return nil, fmt.Errorf("socket %s: %w", s.Name, derr)
		}
		out = append(out, h)
	}
	return out, nil
}

func describe(fd int, h *Held) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	h.Ino = st.Ino
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("SO_TYPE: %w", err)
	}
	switch typ {
	case unix.SOCK_STREAM:
		h.Endpoint.Kind = Stream
	case unix.SOCK_DGRAM:
		h.Endpoint.Kind = Datagram
	case unix.SOCK_SEQPACKET:
		h.Endpoint.Kind = SeqPacket
	default:
		return fmt.Errorf("socket type %d is none of stream, datagram, seqpacket", typ)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		h.Endpoint.Family = Inet4
		h.Endpoint.Addr = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		h.Endpoint.Family = Inet6
		h.Endpoint.Addr = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
		v6only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
		h.Endpoint.V6Only = v6only != 0
	case *unix.SockaddrUnix:
		h.Endpoint.Family = Unix
		h.Endpoint.Path = sa.Name
		if sa.Name != "" && sa.Name[0] != '@' {
			h.file, _ = statFile(sa.Name)
		}
	default:
		return fmt.Errorf("address family of %T is none of inet, inet6, unix", sa)
	}
	return nil
}

// Endpoints returns the endpoints of held, for Match.
func Endpoints(held []Held) []Endpoint {
	out := make([]Endpoint, len(held))
	for i, h := range held {
		out[i] = h.Endpoint
	}
	return out
}
