package trampoline

import (
	"errors"
	"syscall"
	"unsafe"

	"github.com/sockshim/sockshim/handoff/wire"
)

// seccomp(2) and its ABI, which package syscall does not have (see sys.go
// for why not golang.org/x/sys/unix). Linux values, the same on every
// architecture.
const (
	seccompSetModeFilter    = 1          // SECCOMP_SET_MODE_FILTER
	seccompFlagSpecAllow    = 1 << 2     // SECCOMP_FILTER_FLAG_SPEC_ALLOW
	seccompFlagNewListener  = 1 << 3     // SECCOMP_FILTER_FLAG_NEW_LISTENER
	seccompRetAllow         = 0x7fff0000 // SECCOMP_RET_ALLOW
	seccompRetUserNotif     = 0x7fc00000 // SECCOMP_RET_USER_NOTIF
	prSetNoNewPrivs         = 38         // PR_SET_NO_NEW_PRIVS
	seccompDataNrOffset     = 0          // offsetof(struct seccomp_data, nr)
	seccompDataArchOffset   = 4          // offsetof(struct seccomp_data, arch)
	bpfLoadWordAbs          = syscall.BPF_LD | syscall.BPF_W | syscall.BPF_ABS
	bpfJumpIfEqual          = syscall.BPF_JMP | syscall.BPF_JEQ | syscall.BPF_K
	bpfReturn               = syscall.BPF_RET | syscall.BPF_K
	errInterceptUnsupported = "intercept_bind is not supported on this architecture"

	filterFlags = seccompFlagNewListener | seccompFlagSpecAllow
)

// bindFilter is the whole program: bind(2) and listen(2) of this
// architecture's native calls go to sockshim, everything else runs as if no
// filter were there. Nothing on a request's path (accept, read, write,
// epoll) is matched, so the filter costs a served request four BPF
// instructions. A call through another ABI (x32, or 32-bit compat calls on
// amd64) is not matched: it binds the program's own socket, which it could
// do without sockshim, and gains nothing.
func bindFilter() []syscall.SockFilter {
	return []syscall.SockFilter{
		{Code: bpfLoadWordAbs, K: seccompDataArchOffset},
		{Code: bpfJumpIfEqual, K: auditArch, Jt: 0, Jf: 3}, // foreign ABI: allow
		{Code: bpfLoadWordAbs, K: seccompDataNrOffset},
		{Code: bpfJumpIfEqual, K: sysBind, Jt: 2, Jf: 0},
		{Code: bpfJumpIfEqual, K: sysListen, Jt: 1, Jf: 0},
		{Code: bpfReturn, K: seccompRetAllow},
		{Code: bpfReturn, K: seccompRetUserNotif},
	}
}

// interceptBind installs bindFilter on this thread, the one that execs the
// worker, so that the worker and everything it forks or execs inherit it,
// and sends the filter's listener to sockshim over the handoff socket c.
//
// SPEC_ALLOW: by default the kernel treats a task that installs a seccomp
// filter as one to shield from speculative-execution attacks: where the
// mitigation mode is "seccomp" (spec_store_bypass_disable= and
// spectre_v2_user=, x86's default until Linux 5.16), it turns on SSBD and
// STIBP for it, which slows everything the worker runs. This filter
// sandboxes nothing, so the worker keeps the mitigations it had.
//
// Installing a filter needs CAP_SYS_ADMIN or no_new_privs. A worker that
// has the capability keeps its ability to gain privileges through setuid
// binaries; any other one gets no_new_privs, which exec keeps for the
// worker's whole tree (the README's intercept_bind section says what that
// means for setuid helpers).
func interceptBind(c int) error {
	if !InterceptSupported {
		return errors.New(errInterceptUnsupported)
	}
	prog := bindFilter()
	fprog := syscall.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	install := func() (int, syscall.Errno) {
		r, _, e := syscall.RawSyscall(sysSeccomp, seccompSetModeFilter, filterFlags, uintptr(unsafe.Pointer(&fprog)))
		return int(r), e
	}
	listener, e := install()
	if e == syscall.EACCES {
		if err := prctl(prSetNoNewPrivs, 1); err != nil {
			return errors.New("setting no_new_privs: " + err.Error())
		}
		listener, e = install()
	}
	if e != 0 {
		return errors.New("installing the bind filter (seccomp): " + e.Error())
	}
	defer syscall.Close(listener)
	payload := wire.Encode(0, 1, 0, []string{wire.ListenerName})
	if err := syscall.Sendmsg(c, payload, syscall.UnixRights(listener), nil, syscall.MSG_NOSIGNAL); err != nil {
		return errors.New("sending the bind filter's listener to sockshim: " + err.Error())
	}
	return nil
}
