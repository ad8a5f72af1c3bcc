package acceptwait

import "encoding/binary"

// callKind says how a blocked system call names what it waits on.
type callKind int

const (
	otherCall  callKind = iota
	acceptCall          // accept, accept4: the listener is argument 0
	pollCall            // poll, ppoll: a pollfd array (0) of n entries (1)
	selectCall          // select, pselect6: nfds (0), readfds (1)
)

// nativeEndian is the byte order of the processes read: sockshim's own,
// since a worker runs on the same machine.
var nativeEndian = binary.NativeEndian
