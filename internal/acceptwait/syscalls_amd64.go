package acceptwait

import "golang.org/x/sys/unix"

var callKinds = map[int64]callKind{
	unix.SYS_ACCEPT:   acceptCall,
	unix.SYS_ACCEPT4:  acceptCall,
	unix.SYS_POLL:     pollCall,
	unix.SYS_PPOLL:    pollCall,
	unix.SYS_SELECT:   selectCall,
	unix.SYS_PSELECT6: selectCall,
}
