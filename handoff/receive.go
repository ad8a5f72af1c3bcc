package handoff

import (
	"fmt"
	"os"

	"github.com/sockshim/sockshim/handoff/wire"
)

// Receive reads one complete handoff from conn (wire.Receive). The
// descriptors it returns are close-on-exec; on any error none is left open
// and nil is returned.
func Receive(conn *os.File) ([]Socket, error) {
	var fds []int
	var names []string
	err := withRawFD(conn, func(c int) error {
		var err error
		fds, names, err = wire.Receive(c)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	socks := make([]Socket, len(fds))
	for i, fd := range fds {
		socks[i] = Socket{Name: names[i], File: os.NewFile(uintptr(fd), names[i])}
	}
	return socks, nil
}
