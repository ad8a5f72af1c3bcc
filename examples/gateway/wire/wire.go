// Package wire is the message format of the gateway example, the same on both
// hops: a WebSocket client sends the gateway (or a naive business worker) a
// text message "ID PAYLOAD", and the gateway sends the business group the
// line "ID PAYLOAD\n" over the internal socket. Answers are "ID VERSION
// RESULT" (a line ending in "\n" on the internal socket), where VERSION is the
// business worker's version and RESULT is Result(PAYLOAD). A request that
// cannot be answered is answered "ID ! REASON".
//
// ID is a token of 1 to MaxID printable ASCII bytes without spaces; PAYLOAD
// is any text without a newline (possibly empty). Because RESULT depends on
// PAYLOAD alone, answering a request twice gives the same answer: a gateway
// may send a request again when it does not know whether it was answered,
// and keeps only the first answer per ID.
package wire

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
)

// Limits.
const (
	MaxID      = 64
	MaxMessage = 64 << 10 // a request or answer, newline included
)

// Failed is the VERSION field of an answer that carries an error.
const Failed = "!"

// Request is one message to answer.
type Request struct {
	ID      []byte
	Payload []byte
}

// ParseRequest splits "ID PAYLOAD" (no trailing newline). The result aliases
// b.
func ParseRequest(b []byte) (Request, error) {
	id, payload, _ := bytes.Cut(b, []byte(" "))
	if err := checkID(id); err != nil {
		return Request{}, err
	}
	if bytes.IndexByte(payload, '\n') >= 0 {
		return Request{ID: id}, errors.New("payload contains a newline")
	}
	if len(b)+1 > MaxMessage {
		return Request{ID: id}, fmt.Errorf("message is %d bytes; at most %d", len(b), MaxMessage-1)
	}
	return Request{ID: id, Payload: payload}, nil
}

func checkID(id []byte) error {
	if len(id) == 0 || len(id) > MaxID {
		return fmt.Errorf("id must be 1 to %d bytes", MaxID)
	}
	for _, c := range id {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("id %q: printable ASCII without spaces only", id)
		}
	}
	return nil
}

// AppendRequest appends "ID PAYLOAD" to dst.
func AppendRequest(dst, id, payload []byte) []byte {
	dst = append(dst, id...)
	dst = append(dst, ' ')
	return append(dst, payload...)
}

// Answer is the answer to one request.
type Answer struct {
	ID      []byte
	Version string // Failed for an error
	Result  []byte // Result(payload), or the error's text
}

// Err is the error an answer carries, or nil.
func (a Answer) Err() error {
	if a.Version != Failed {
		return nil
	}
	return errors.New(string(a.Result))
}

// ParseAnswer splits "ID VERSION RESULT" (no trailing newline). ID and Result
// alias b.
func ParseAnswer(b []byte) (Answer, error) {
	id, rest, ok := bytes.Cut(b, []byte(" "))
	if !ok {
		return Answer{}, fmt.Errorf("answer %.40q: want \"ID VERSION RESULT\"", b)
	}
	if err := checkID(id); err != nil {
		return Answer{}, err
	}
	version, result, ok := bytes.Cut(rest, []byte(" "))
	if !ok || len(version) == 0 {
		return Answer{}, fmt.Errorf("answer %.40q: want \"ID VERSION RESULT\"", b)
	}
	return Answer{ID: id, Version: string(version), Result: result}, nil
}

// AppendAnswer appends "ID VERSION RESULT" to dst.
func AppendAnswer(dst, id []byte, version string, result []byte) []byte {
	dst = append(dst, id...)
	dst = append(dst, ' ')
	dst = append(dst, version...)
	dst = append(dst, ' ')
	return append(dst, result...)
}

// AppendError appends "ID ! REASON" to dst.
func AppendError(dst, id []byte, reason string) []byte {
	return AppendAnswer(dst, id, Failed, []byte(reason))
}

// Result is the business function: the FNV-1a 64-bit hash of the payload in
// hex. It depends on the payload only, so any worker of any version answers a
// request the same way.
func Result(payload []byte) []byte {
	h := fnv.New64a()
	h.Write(payload)
	return strconv.AppendUint(nil, h.Sum64(), 16)
}

// CleanVersion makes s usable as VERSION: surrounding space trimmed, inner
// spaces and control characters replaced by '_'. It returns "" for a blank s.
func CleanVersion(s string) string {
	b := []byte(s)
	b = bytes.TrimSpace(b)
	for i, c := range b {
		if c <= ' ' || c == 0x7f {
			b[i] = '_'
		}
	}
	if string(b) == Failed {
		return "_"
	}
	return string(b)
}
