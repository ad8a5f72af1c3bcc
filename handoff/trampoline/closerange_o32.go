//go:build linux && (mips || mipsle)

package trampoline

const sysCloseRange = 4436 // close_range(2), o32
