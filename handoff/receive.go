package handoff

import (
	"fmt"
	"os"

	"github.com/sockshim/sockshim/handoff/wire"
)

// Receive reads one complete handoff from conn (wire.Receive) and returns
// its sockets and flags. The descriptors it returns are close-on-exec; on
// any error none is left open and nil is returned.
func Receive(conn *os.File) ([]Socket, byte, error) {
	var fds []int
	var names []string
	var flags byte
	err := withRawFD(conn, func(c int) error {
		var err error
		fds, names, flags, err = wire.Receive(c)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("handoff: %w", err)
	}
	socks := make([]Socket, len(fds))
	for i, fd := range fds {
		socks[i] = Socket{Name: names[i], File: os.NewFile(uintptr(fd), names[i])}
	}
	return socks, flags, nil
}
