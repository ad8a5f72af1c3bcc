//go:build linux && (mips64 || mips64le)

package trampoline

const sysCloseRange = 5436 // close_range(2), n64
