package sockets

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/sockshim/sockshim/shim/config"
	"golang.org/x/sys/unix"
)

// Adopt takes a socket the service manager passed back from its file
// descriptor store as the [[listen]] entry l, if it is what l describes now:
// the same family, type and address (the config may have changed since it
// was stored). It then listens again with l's backlog, which sets the
// backlog l asks for and revives a socket that a process shut down. A
// socket Adopt refuses is the caller's to close and bind anew.
func Adopt(f *os.File, l config.Listen) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var aerr error
	if err := rc.Control(func(fd uintptr) { aerr = adopt(int(fd), l) }); err != nil {
		return err
	}
	return aerr
}

func adopt(fd int, l config.Listen) error {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("SO_DOMAIN: %w", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("SO_TYPE: %w", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	if err := sameAddress(domain, typ, got, l); err != nil {
		return err
	}
	if typ == unix.SOCK_DGRAM {
		return nil
	}
	backlog := l.Backlog
	if backlog <= 0 {
		backlog = defaultBacklog
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return nil
}

// sameAddress fails unless a socket of domain and typ bound to got is what
// l binds. A port of 0 in l matches any port: the kernel chose it.
func sameAddress(domain, typ int, got unix.Sockaddr, l config.Listen) error {
	var wantDomain, wantType int
	var want unix.Sockaddr
	if strings.HasPrefix(l.Network, "unix") {
		wantDomain = unix.AF_UNIX
		wantType = unixTypes[l.Network]
		name := l.Addr
		if strings.HasPrefix(name, "@") {
			name = "\x00" + name[1:]
		}
		want = &unix.SockaddrUnix{Name: name}
	} else {
		var err error
		if wantDomain, wantType, want, err = inetSockaddr(l); err != nil {
			return err
		}
	}
	mismatch := fmt.Errorf("it is bound to %s, the config says %s", describeSockaddr(got), l.Address)
	if domain != wantDomain || typ != wantType {
		return mismatch
	}
	switch w := want.(type) {
	case *unix.SockaddrInet4:
		g, ok := got.(*unix.SockaddrInet4)
		if !ok || g.Addr != w.Addr || (w.Port != 0 && g.Port != w.Port) {
			return mismatch
		}
	case *unix.SockaddrInet6:
		g, ok := got.(*unix.SockaddrInet6)
		if !ok || g.Addr != w.Addr || (w.Port != 0 && g.Port != w.Port) {
			return mismatch
		}
	case *unix.SockaddrUnix:
		g, ok := got.(*unix.SockaddrUnix)
		if !ok || g.Name != w.Name {
			return mismatch
		}
		if !strings.HasPrefix(w.Name, "\x00") {
			// Its file may have been removed since: clients could not
			// reach it by that path any more.
			var st unix.Stat_t
			if err := unix.Stat(w.Name, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
				return fmt.Errorf("its file %s is gone or is no socket any more", w.Name)
			}
		}
	}
	return nil
}

// describeSockaddr writes a bound address as a config would.
func describeSockaddr(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrUnix:
		if strings.HasPrefix(a.Name, "\x00") {
			return "@" + a.Name[1:]
		}
		return a.Name
	}
	return fmt.Sprintf("%T", sa)
}
