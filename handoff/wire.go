package handoff

import (
	"os"

	"github.com/sockshim/sockshim/handoff/wire"
)

// Socket is one named socket passed between processes.
type Socket struct {
	Name string
	File *os.File
}

// CheckName rejects names that cannot be one entry of LISTEN_FDNAMES: empty,
// longer than wire.MaxNameLen, or containing ':' (the separator) or a
// control character.
func CheckName(n string) error { return wire.CheckName(n) }
