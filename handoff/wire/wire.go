// Package wire is the handoff's wire format and its receiving end on raw
// descriptors. It links neither os nor fmt: the trampoline, which runs at
// every worker start, receives with it, and sockshim sends with it through
// package handoff.
package wire

import (
	"errors"
	"strconv"
)

// The wire format. A handoff is one or more SOCK_SEQPACKET messages, each
// carrying up to MaxFDsPerMessage descriptors with SCM_RIGHTS and a payload
// that describes exactly those descriptors:
//
//	magic   [4]byte "SKSH"
//	version uint8   1
//	flags   uint8   FlagInterceptBind, or 0; the same in every message
//	total   uint32  sockets in the whole handoff
//	first   uint32  index of this message's first socket
//	count   uint16  sockets (and descriptors) in this message
//	count × { len uint8; name [len]byte }
//
// Integers are big-endian. Messages arrive in order (first = number of
// sockets received so far); a handoff of zero sockets is one message with
// count 0. Names travel with their descriptors, so a message is
// self-contained and a truncated one is detectable on its own.
const (
	Version = 1
	// MaxFDsPerMessage is the kernel's SCM_MAX_FD: a message carrying more
	// has its descriptors silently cut.
	MaxFDsPerMessage = 253
	// MaxSockets bounds total so a corrupt header cannot make the receiver
	// allocate without limit.
	MaxSockets = 65536
	// MaxNameLen is the longest socket name (systemd's FileDescriptorName=
	// allows 255 characters).
	MaxNameLen = 255
	// HeaderLen is the payload's fixed part, before the names.
	HeaderLen = 4 + 1 + 1 + 4 + 4 + 2

	maxPayload = HeaderLen + MaxFDsPerMessage*(1+MaxNameLen)
)

// FlagInterceptBind asks the trampoline to install the bind filter before
// it execs the worker (package trampoline's interceptBind) and to send the
// filter's listener back over the handoff socket as a handoff of its own:
// one descriptor named ListenerName, flags 0.
const FlagInterceptBind = 1 << 0

// ListenerName names the seccomp listener in the trampoline's answer.
const ListenerName = "seccomp-listener"

// knownFlags are the flags this version understands; any other bit set is
// an error, so a newer sockshim never meets a trampoline that silently
// ignores what it asked for.
const knownFlags = FlagInterceptBind

var magic = [4]byte{'S', 'K', 'S', 'H'}

// header is the decoded payload of one message.
type header struct {
	flags        byte
	total, first int
	names        []string
}

// Encode builds the payload of the message that carries the sockets named
// names, the first of which is socket first of total, with flags.
func Encode(flags byte, total, first int, names []string) []byte {
	b := make([]byte, HeaderLen, HeaderLen+len(names)*16)
	copy(b, magic[:])
	b[4] = Version
	b[5] = flags
	put32(b[6:], uint32(total))
	put32(b[10:], uint32(first))
	b[14], b[15] = byte(len(names)>>8), byte(len(names))
	for _, n := range names {
		b = append(b, byte(len(n)))
		b = append(b, n...)
	}
	return b
}

func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}
func get32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// decode parses and checks one payload. It knows nothing of descriptors;
// the caller matches count against what SCM_RIGHTS delivered.
func decode(b []byte) (header, error) {
	var h header
	if len(b) < HeaderLen {
		return h, errors.New("payload of " + itoa(len(b)) + " bytes is shorter than the " + itoa(HeaderLen) + "-byte header")
	}
	if [4]byte(b[:4]) != magic {
		return h, errors.New("bad magic " + strconv.Quote(string(b[:4])) + ": not a sockshim handoff")
	}
	if b[4] != Version {
		return h, errors.New("protocol version " + itoa(int(b[4])) + ", want " + itoa(Version) + " (sockshim and its trampoline differ?)")
	}
	if b[5]&^knownFlags != 0 {
		return h, errors.New("unknown flags 0x" + strconv.FormatUint(uint64(b[5]&^knownFlags), 16) + " (sockshim and its trampoline differ?)")
	}
	h.flags = b[5]
	total := uint64(get32(b[6:]))
	first := uint64(get32(b[10:]))
	count := int(b[14])<<8 | int(b[15])
	switch {
	case total > MaxSockets:
		return h, errors.New("total of " + u64toa(total) + " sockets exceeds the limit of " + itoa(MaxSockets))
	case count > MaxFDsPerMessage:
		return h, errors.New("message claims " + itoa(count) + " sockets, more than the " + itoa(MaxFDsPerMessage) + " one message can carry")
	case first+uint64(count) > total:
		return h, errors.New("sockets " + u64toa(first) + ".." + u64toa(first+uint64(count)) + " exceed the total of " + u64toa(total))
	case count == 0 && total != 0:
		return h, errors.New("empty message in a non-empty handoff")
	}
	h.total, h.first = int(total), int(first)
	rest := b[HeaderLen:]
	h.names = make([]string, 0, count)
	for i := range count {
		if len(rest) < 1 {
			return h, errors.New("name " + itoa(i) + ": payload ends before its length")
		}
		n := int(rest[0])
		if len(rest) < 1+n {
			return h, errors.New("name " + itoa(i) + ": payload ends inside it")
		}
		name := string(rest[1 : 1+n])
		if err := CheckName(name); err != nil {
			return h, wrap("name "+itoa(i), err)
		}
		h.names = append(h.names, name)
		rest = rest[1+n:]
	}
	if len(rest) != 0 {
		return h, errors.New(itoa(len(rest)) + " stray bytes after the names")
	}
	return h, nil
}

// CheckName rejects names that cannot be one entry of LISTEN_FDNAMES: empty,
// longer than MaxNameLen, or containing ':' (the separator) or a control
// character.
func CheckName(n string) error {
	if n == "" {
		return errors.New("empty socket name")
	}
	if len(n) > MaxNameLen {
		return errors.New("socket name of " + itoa(len(n)) + " bytes exceeds " + itoa(MaxNameLen))
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c == ':' || c < 0x20 || c == 0x7f {
			return errors.New("socket name " + strconv.Quote(n) + " contains ':' or a control character")
		}
	}
	return nil
}

func itoa(n int) string      { return strconv.Itoa(n) }
func u64toa(n uint64) string { return strconv.FormatUint(n, 10) }

// wrapped is fmt.Errorf("%s: %w") without fmt.
type wrapped struct {
	prefix string
	err    error
}

func wrap(prefix string, err error) error { return &wrapped{prefix, err} }
func (e *wrapped) Error() string          { return e.prefix + ": " + e.err.Error() }
func (e *wrapped) Unwrap() error          { return e.err }
