// Package sockets takes the example's sockets the systemd way (LISTEN_FDS,
// LISTEN_FDNAMES, LISTEN_PID) by name, and finds the address of a socket a
// program only connects to.
package sockets

import (
	"fmt"
	"net"
	"os"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// Take returns the inherited sockets by name (LISTEN_FDNAMES) and clears the
// LISTEN_* variables so that a child process does not take them as its own.
// Call it once.
func Take() map[string]*os.File {
	out := map[string]*os.File{}
	for _, f := range activation.Files(true) {
		out[f.Name()] = f
	}
	return out
}

// Listener turns an inherited listening socket into a net.Listener and
// closes f (the listener holds its own duplicate).
func Listener(f *os.File) (net.Listener, error) {
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("socket %q: %w", f.Name(), err)
	}
	return ln, nil
}

// DialAddr returns the network and address to dial to reach the listening
// socket f: getsockname(2) on it, with a wildcard IP address (0.0.0.0, ::)
// turned into loopback. It works for tcp, unix and abstract unix ("@name")
// sockets, whoever bound them. It reads the descriptor through
// SyscallConn, which leaves its blocking mode alone (f.Fd() would switch the
// socket to blocking mode for every process that shares it).
func DialAddr(f *os.File) (network, address string, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return "", "", fmt.Errorf("socket %q: %w", f.Name(), err)
	}
	var sa unix.Sockaddr
	var typ int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		sa, serr = unix.Getsockname(int(fd))
		if serr == nil {
			typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		}
	}); err != nil {
		return "", "", fmt.Errorf("socket %q: %w", f.Name(), err)
	}
	if serr != nil {
		return "", "", fmt.Errorf("socket %q: getsockname: %w", f.Name(), serr)
	}
	if typ != unix.SOCK_STREAM {
		return "", "", fmt.Errorf("socket %q: not a stream socket (SO_TYPE %d)", f.Name(), typ)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		ip := net.IP(sa.Addr[:])
		if ip.IsUnspecified() {
			ip = net.IPv4(127, 0, 0, 1)
		}
		return "tcp", net.JoinHostPort(ip.String(), fmt.Sprint(sa.Port)), nil
	case *unix.SockaddrInet6:
		ip := net.IP(sa.Addr[:])
		if ip.IsUnspecified() {
			ip = net.IPv6loopback
		}
		return "tcp", net.JoinHostPort(ip.String(), fmt.Sprint(sa.Port)), nil
	case *unix.SockaddrUnix:
		// x/sys/unix writes an abstract name's leading NUL as '@', which is
		// also how package net spells an abstract address.
		if sa.Name == "" || sa.Name == "@" {
			return "", "", fmt.Errorf("socket %q: unnamed unix socket", f.Name())
		}
		return "unix", sa.Name, nil
	}
	return "", "", fmt.Errorf("socket %q: unsupported address family %T", f.Name(), sa)
}
