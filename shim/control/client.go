package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/sockshim/sockshim/internal/sockfile"
)

// Call sends one request to the supervisor at path and returns the final
// reply, handing every progress line to progress (which may be nil).
// A reply that reports failure is returned with that failure as the error.
// Only a server run by root or by the caller's own uid is believed.
func Call(path string, req Request, progress func(string)) (*Reply, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connecting to sockshim at %s (is it running with this config?): %w", path, err)
	}
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: reading the server's credentials: %w", path, err)
	}
	if uid := os.Getuid(); cred.Uid != 0 && int(cred.Uid) != uid {
		return nil, fmt.Errorf("control socket %s is answered by uid %d (%s, pid %d), not by root or uid %d: refusing to trust it",
			path, cred.Uid, sockfile.Command(int(cred.Pid)), cred.Pid, uid)
	}
	// A supervisor that refuses the caller answers and hangs up before it
	// reads the request, so a failed send still leaves a reply to read.
	sendErr := json.NewEncoder(c).Encode(req)
	r, err := readReply(c, progress)
	switch {
	case r != nil:
		return r, err
	case sendErr != nil:
		return nil, fmt.Errorf("sending %s request to %s: %w", req.Command, path, sendErr)
	case errors.Is(err, errNoAnswer):
		return nil, fmt.Errorf("sockshim at %s closed the connection without an answer (did it stop?)", path)
	}
	return nil, fmt.Errorf("reading reply from %s: %w", path, err)
}
