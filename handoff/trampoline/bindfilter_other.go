//go:build linux && !amd64 && !arm64

package trampoline

// InterceptSupported is false where this package does not carry the
// architecture's audit value and system call numbers: intercept_bind fails
// at the worker's start, and `sockshim check` says so before.
const InterceptSupported = false

const (
	auditArch  = 0
	sysSeccomp = 0
	sysBind    = 0
	sysListen  = 0
)
