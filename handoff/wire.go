package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// The wire format. A handoff is one or more SOCK_SEQPACKET messages, each
// carrying up to MaxFDsPerMessage descriptors with SCM_RIGHTS and a payload
// that describes exactly those descriptors:
//
//	magic   [4]byte "SKSH"
//	version uint8   1
//	flags   uint8   0 (reserved)
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

	headerLen  = 4 + 1 + 1 + 4 + 4 + 2
	maxPayload = headerLen + MaxFDsPerMessage*(1+MaxNameLen)
)

var magic = [4]byte{'S', 'K', 'S', 'H'}

// Socket is one named socket passed between processes.
type Socket struct {
	Name string
	File *os.File
}

// header is the decoded payload of one message.
type header struct {
	total, first int
	names        []string
}

// encode builds the payload for names[first:first+len(chunk)].
func encode(total, first int, names []string) []byte {
	b := make([]byte, headerLen, headerLen+len(names)*16)
	copy(b, magic[:])
	b[4] = Version
	b[5] = 0
	binary.BigEndian.PutUint32(b[6:], uint32(total))
	binary.BigEndian.PutUint32(b[10:], uint32(first))
	binary.BigEndian.PutUint16(b[14:], uint16(len(names)))
	for _, n := range names {
		b = append(b, byte(len(n)))
		b = append(b, n...)
	}
	return b
}

// decode parses and checks one payload. It knows nothing of descriptors;
// the caller matches count against what SCM_RIGHTS delivered.
func decode(b []byte) (header, error) {
	var h header
	if len(b) < headerLen {
		return h, fmt.Errorf("payload of %d bytes is shorter than the %d-byte header", len(b), headerLen)
	}
	if [4]byte(b[:4]) != magic {
		return h, fmt.Errorf("bad magic %q: not a sockshim handoff", b[:4])
	}
	if b[4] != Version {
		return h, fmt.Errorf("protocol version %d, want %d (sockshim and its trampoline differ?)", b[4], Version)
	}
	if b[5] != 0 {
		return h, fmt.Errorf("unknown flags %#x", b[5])
	}
	total := binary.BigEndian.Uint32(b[6:])
	first := binary.BigEndian.Uint32(b[10:])
	count := int(binary.BigEndian.Uint16(b[14:]))
	switch {
	case total > MaxSockets:
		return h, fmt.Errorf("total of %d sockets exceeds the limit of %d", total, MaxSockets)
	case count > MaxFDsPerMessage:
		return h, fmt.Errorf("message claims %d sockets, more than the %d one message can carry", count, MaxFDsPerMessage)
	case uint64(first)+uint64(count) > uint64(total):
		return h, fmt.Errorf("sockets %d..%d exceed the total of %d", first, uint64(first)+uint64(count), total)
	case count == 0 && total != 0:
		return h, errors.New("empty message in a non-empty handoff")
	}
	h.total, h.first = int(total), int(first)
	rest := b[headerLen:]
	h.names = make([]string, 0, count)
	for i := range count {
		if len(rest) < 1 {
			return h, fmt.Errorf("name %d: payload ends before its length", i)
		}
		n := int(rest[0])
		if len(rest) < 1+n {
			return h, fmt.Errorf("name %d: payload ends inside it", i)
		}
		name := string(rest[1 : 1+n])
		if err := CheckName(name); err != nil {
			return h, fmt.Errorf("name %d: %w", i, err)
		}
		h.names = append(h.names, name)
		rest = rest[1+n:]
	}
	if len(rest) != 0 {
		return h, fmt.Errorf("%d stray bytes after the names", len(rest))
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
		return fmt.Errorf("socket name of %d bytes exceeds %d", len(n), MaxNameLen)
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c == ':' || c < 0x20 || c == 0x7f {
			return fmt.Errorf("socket name %q contains ':' or a control character", n)
		}
	}
	return nil
}
