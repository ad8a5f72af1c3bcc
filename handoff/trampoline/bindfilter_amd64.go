package trampoline

import "syscall"

// InterceptSupported says whether intercept_bind works on this
// architecture (bindfilter.go).
const InterceptSupported = true

const (
	auditArch  = 0xc000003e // AUDIT_ARCH_X86_64
	sysSeccomp = 317
	sysBind    = syscall.SYS_BIND
	sysListen  = syscall.SYS_LISTEN
)
