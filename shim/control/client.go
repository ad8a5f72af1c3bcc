package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
)

// Call sends one request to the supervisor at path and returns the final
// reply, handing every progress line to progress (which may be nil).
// A reply that reports failure is returned as an error.
func Call(path string, req Request, progress func(string)) (*Reply, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to sockshim at %s (is it running with this config?): %w", path, err)
	}
	defer c.Close()
	// A supervisor that refuses the caller answers and hangs up before it
	// reads the request, so a failed send still leaves a reply to read.
	sendErr := json.NewEncoder(c).Encode(req)
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var r Reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("malformed reply from %s: %w", path, err)
		}
		if !r.Done {
			if progress != nil {
				progress(r.Progress)
			}
			continue
		}
		if r.Error != "" {
			return &r, errors.New(r.Error)
		}
		return &r, nil
	}
	if sendErr != nil {
		return nil, fmt.Errorf("sending %s request to %s: %w", req.Command, path, sendErr)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading reply from %s: %w", path, err)
	}
	return nil, fmt.Errorf("sockshim at %s closed the connection without an answer (did it stop?)", path)
}
