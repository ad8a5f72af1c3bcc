package trampoline

import "syscall"

// InterceptSupported says whether intercept_bind works on this
// architecture (bindfilter.go).
const InterceptSupported = true

const (
	auditArch  = 0xc00000b7 // AUDIT_ARCH_AARCH64
	sysSeccomp = 277
	sysBind    = syscall.SYS_BIND
	sysListen  = syscall.SYS_LISTEN
)
