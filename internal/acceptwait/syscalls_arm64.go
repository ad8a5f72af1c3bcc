package acceptwait

import "golang.org/x/sys/unix"

// arm64 has no poll or select system call: libc implements them with ppoll
// and pselect6.
var callKinds = map[int64]callKind{
	unix.SYS_ACCEPT:   acceptCall,
	unix.SYS_ACCEPT4:  acceptCall,
	unix.SYS_PPOLL:    pollCall,
	unix.SYS_PSELECT6: selectCall,
}
