package control

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzRequest feeds the server's request reader whatever a client might
// send. Seeds: testdata/fuzz/FuzzRequest and the lines around the limit.
func FuzzRequest(f *testing.F) {
	long := bytes.Repeat([]byte("x"), maxRequest)
	f.Add(long)                              // no newline, just within the limit
	f.Add(append(long, '\n'))                // one byte over
	f.Add(append(long[:maxRequest-1], '\n')) // exactly the limit
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := readRequest(bytes.NewReader(data))
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line = data[:i+1]
		}
		if len(line) > maxRequest {
			if err == nil {
				t.Fatalf("a %d-byte line was accepted as %+v", len(line), req)
			}
			return
		}
		if err != nil {
			return
		}
		if !json.Valid(line) {
			t.Fatalf("accepted invalid JSON %q as %+v", line, req)
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		back, err := readRequest(bytes.NewReader(append(again, '\n')))
		if err != nil || back != req {
			t.Fatalf("%+v encoded as %s reads back as %+v, %v", req, again, back, err)
		}
	})
}

// FuzzReply feeds the client's reply reader whatever a server might send.
// Seeds: testdata/fuzz/FuzzReply.
func FuzzReply(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		progress := 0
		r, err := readReply(bytes.NewReader(data), func(string) { progress++ })
		switch {
		case r == nil && err == nil:
			t.Fatal("neither a reply nor an error")
		case r != nil && !r.Done:
			t.Fatalf("returned a reply that is not final: %+v", r)
		case r != nil && r.Error == "" && err != nil:
			t.Fatalf("successful reply %+v with error %v", r, err)
		case r != nil && r.Error != "" && (err == nil || err.Error() != r.Error):
			t.Fatalf("failed reply %+v returned with error %v", r, err)
		}
		if lines := bytes.Count(data, []byte("\n")) + 1; progress > lines {
			t.Fatalf("%d progress lines from %d lines", progress, lines)
		}
	})
}
