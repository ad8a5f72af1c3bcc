package sockets

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/internal/sockfile"
	"github.com/sockshim/sockshim/internal/unixaddr"
	"github.com/sockshim/sockshim/shim/config"
	"golang.org/x/sys/unix"
)

// defaultBacklog asks for the largest queue the kernel allows; listen(2)
// silently caps it at net.core.somaxconn, which is what systemd uses too.
const defaultBacklog = 65535

// Bind opens every [[listen]] entry the way systemd would open a .socket
// unit's: blocking, close-on-exec, SO_REUSEADDR. Sockets are created with raw
// syscalls rather than net.Listen because net sets O_NONBLOCK on the open file
// description, which every worker would then share and many servers do not
// expect. On error every socket opened so far is closed.
func Bind(listens []config.Listen) ([]handoff.Socket, error) {
	return Open(listens, nil, nil, slog.New(slog.DiscardHandler))
}

// Close closes every socket's file.
func Close(socks []handoff.Socket) {
	for _, s := range socks {
		s.File.Close()
	}
}

func bindOne(l config.Listen) (*os.File, error) {
	network := l.Network
	switch {
	case strings.HasPrefix(network, "tcp"), strings.HasPrefix(network, "udp"):
		return bindInet(l)
	case network == "unix" || network == "unixgram" || network == "unixpacket":
		return bindUnix(l)
	}
	return nil, fmt.Errorf("unsupported network %q", network)
}

func bindInet(l config.Listen) (*os.File, error) {
	family, typ, sa, err := inetSockaddr(l)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	return finish(fd, sa, typ == unix.SOCK_STREAM, l)
}

// inetSockaddr is what a tcp or udp [[listen]] entry binds.
func inetSockaddr(l config.Listen) (family, typ int, sa unix.Sockaddr, err error) {
	stream := strings.HasPrefix(l.Network, "tcp")
	var ip net.IP
	var port int
	if stream {
		a, err := net.ResolveTCPAddr(l.Network, l.Addr)
		if err != nil {
			return 0, 0, nil, err
		}
		ip, port = a.IP, a.Port
	} else {
		a, err := net.ResolveUDPAddr(l.Network, l.Addr)
		if err != nil {
			return 0, 0, nil, err
		}
		ip, port = a.IP, a.Port
	}
	family = unix.AF_INET6
	switch {
	case ip == nil || ip.IsUnspecified() && ip.To4() == nil:
		// "[::]:80" or ":80": dual-stack, as systemd's BindIPv6Only=default.
		s6 := &unix.SockaddrInet6{Port: port}
		if ip != nil {
			copy(s6.Addr[:], ip.To16())
		}
		sa = s6
	case ip.To4() != nil:
		family = unix.AF_INET
		s4 := &unix.SockaddrInet4{Port: port}
		copy(s4.Addr[:], ip.To4())
		sa = s4
	default:
		sa = &unix.SockaddrInet6{Port: port, Addr: [16]byte(ip.To16())}
	}
	typ = unix.SOCK_DGRAM
	if stream {
		typ = unix.SOCK_STREAM
	}
	return family, typ, sa, nil
}

// unixTypes is the socket type of each unix network a config may name.
var unixTypes = map[string]int{"unix": unix.SOCK_STREAM, "unixgram": unix.SOCK_DGRAM, "unixpacket": unix.SOCK_SEQPACKET}

func bindUnix(l config.Listen) (*os.File, error) {
	typ := unixTypes[l.Network]
	if len(l.Addr) > unixaddr.MaxPath {
		return nil, fmt.Errorf("socket path is %d bytes; a unix socket path holds at most %d", len(l.Addr), unixaddr.MaxPath)
	}
	abstract := strings.HasPrefix(l.Addr, "@")
	if !abstract {
		if err := sockfile.RemoveStale(l.Addr, typ); err != nil {
			return nil, err
		}
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	name := l.Addr
	if abstract {
		name = "\x00" + name[1:]
	}
	f, err := finish(fd, &unix.SockaddrUnix{Name: name}, typ != unix.SOCK_DGRAM, l)
	if err != nil || abstract {
		return f, err
	}
	if err := os.Chmod(l.Addr, l.Mode); err != nil {
		f.Close()
		return nil, fmt.Errorf("chmod: %w", err)
	}
	return f, nil
}

func finish(fd int, sa unix.Sockaddr, listen bool, l config.Listen) (*os.File, error) {
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind: %w", err)
	}
	if listen {
		backlog := l.Backlog
		if backlog <= 0 {
			backlog = defaultBacklog
		}
		if err := unix.Listen(fd, backlog); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	return os.NewFile(uintptr(fd), l.Name), nil
}
