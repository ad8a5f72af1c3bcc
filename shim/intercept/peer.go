package intercept

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// What sockshim reads of a worker's thread while it waits in a call. Every
// read needs ptrace access to it (PTRACE_MODE_ATTACH for its memory,
// PTRACE_MODE_READ for /proc/TID/fd): the same user, or CAP_SYS_PTRACE,
// which the shipped unit keeps.

// maxSockaddr is sizeof(struct sockaddr_storage): the kernel refuses a
// longer address with EINVAL, so sockshim need not read one.
const maxSockaddr = 128

// fdPath is where /proc shows descriptor fd of thread tid.
func fdPath(tid, fd int) string {
	return "/proc/" + strconv.Itoa(tid) + "/fd/" + strconv.Itoa(fd)
}

// sockProto is the kernel's name for the protocol of the socket at fd of
// tid ("TCP", "UDPv6", "UNIX-STREAM"…), from the xattr sockfs gives every
// socket. Unlike pidfd_getfd, which the shipped unit's system call filter
// denies (@debug), it needs no descriptor of the worker's in sockshim.
func sockProto(tid, fd int) (string, error) {
	buf := make([]byte, 32)
	n, err := unix.Getxattr(fdPath(tid, fd), "system.sockprotoname", buf)
	if err != nil {
		return "", fmt.Errorf("the socket's protocol: %w", err)
	}
	return string(bytes.TrimRight(buf[:n], "\x00")), nil
}

// socketIno returns the inode of the socket at fd of tid, or false when fd
// is not a socket or cannot be read.
func socketIno(tid, fd int) (uint64, bool) {
	link, err := os.Readlink(fdPath(tid, fd))
	if err != nil {
		return 0, false
	}
	rest, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64)
	return ino, err == nil
}

// fdFlags returns the open flags (O_NONBLOCK, O_CLOEXEC…) of fd of tid, as
// its fdinfo shows them.
func fdFlags(tid, fd int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			f, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			return int(f), err
		}
	}
	return 0, errors.New("no flags in fdinfo")
}

// protoEndpoint maps a protocol name to a family and kind; ok is false for
// protocols no held socket can be (MPTCP, SCTP, raw…).
func protoEndpoint(proto string) (e Endpoint, ok bool) {
	switch proto {
	case "TCP":
		return Endpoint{Family: Inet4, Kind: Stream}, true
	case "TCPv6":
		return Endpoint{Family: Inet6, Kind: Stream}, true
	case "UDP":
		return Endpoint{Family: Inet4, Kind: Datagram}, true
	case "UDPv6":
		return Endpoint{Family: Inet6, Kind: Datagram}, true
	case "UNIX-STREAM":
		return Endpoint{Family: Unix, Kind: Stream}, true
	case "UNIX": // datagram or seqpacket
		return Endpoint{Family: Unix, Kind: Datagram}, true
	}
	return Endpoint{}, false
}

// parseSockaddr fills e's address from a struct sockaddr as bind got it;
// ok is false when the address is not of e's family or is one the kernel
// would refuse (too short), or a unix bind without a name (autobind). A
// relative unix path is relative to the worker's working directory, which
// cwd returns.
func parseSockaddr(e Endpoint, sa []byte, cwd func() (string, error)) (Endpoint, bool) {
	if len(sa) < 2 {
		return e, false
	}
	family := binary.NativeEndian.Uint16(sa)
	switch {
	case e.Family == Inet4 && family == unix.AF_INET && len(sa) >= unix.SizeofSockaddrInet4:
		e.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4]))
	case e.Family == Inet6 && family == unix.AF_INET6 && len(sa) >= 24: // SIN6_LEN_RFC2133: no scope id
		e.Addr = netip.AddrPortFrom(netip.AddrFrom16([16]byte(sa[8:24])), binary.BigEndian.Uint16(sa[2:4]))
	case e.Family == Unix && family == unix.AF_UNIX && len(sa) > 2:
		path := sa[2:]
		if path[0] == 0 {
			e.Path = "@" + string(path[1:])
			break
		}
		if i := bytes.IndexByte(path, 0); i >= 0 {
			path = path[:i]
		}
		e.Path = string(path)
		if !filepath.IsAbs(e.Path) {
			dir, err := cwd()
			if err != nil {
				return e, false
			}
			e.Path = filepath.Join(dir, e.Path)
		}
		e.Path = filepath.Clean(e.Path) // the name the kernel resolves
	default:
		return e, false
	}
	return e, true
}
