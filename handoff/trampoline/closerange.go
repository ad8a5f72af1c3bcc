//go:build linux && !(mips || mipsle || mips64 || mips64le)

package trampoline

const sysCloseRange = 436 // close_range(2)
