package intercept

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The seccomp user-notification ABI (linux/seccomp.h), which
// golang.org/x/sys/unix has constants but no types for.

// notif is struct seccomp_notif.
type notif struct {
	id    uint64
	pid   uint32 // the calling thread, in the listener's pid namespace
	flags uint32
	nr    int32  // seccomp_data.nr
	arch  uint32 // seccomp_data.arch
	ip    uint64 // seccomp_data.instruction_pointer
	args  [6]uint64
}

// notifResp is struct seccomp_notif_resp.
type notifResp struct {
	id    uint64
	val   int64
	error int32 // a negative errno, or 0
	flags uint32
}

// notifAddfd is struct seccomp_notif_addfd.
type notifAddfd struct {
	id         uint64
	flags      uint32
	srcfd      uint32
	newfd      uint32
	newfdFlags uint32
}

// The sizes the ioctl numbers encode; a mismatch would make every call fail.
var (
	_ [80 - unsafe.Sizeof(notif{})]struct{}
	_ [unsafe.Sizeof(notif{}) - 80]struct{}
	_ [24 - unsafe.Sizeof(notifResp{})]struct{}
	_ [unsafe.Sizeof(notifResp{}) - 24]struct{}
	_ [24 - unsafe.Sizeof(notifAddfd{})]struct{}
	_ [unsafe.Sizeof(notifAddfd{}) - 24]struct{}
)

func ioctl(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		switch e {
		case 0:
			return r, nil
		case unix.EINTR:
			continue
		}
		return r, e
	}
}

// recv takes the next notification. The kernel wants the struct zeroed.
func recv(listener int) (notif, error) {
	var n notif
	_, err := ioctl(listener, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&n))
	return n, err
}

// idValid: the thread of notification id still waits in the call, so what
// was read of it (by pid) was read of that thread and not of a process that
// reused its pid.
func idValid(listener int, id uint64) bool {
	_, err := ioctl(listener, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id))
	return err == nil
}

// reply ends the call with val (when errno is 0) or with the error errno.
func reply(listener int, id uint64, val int64, errno unix.Errno) error {
	r := notifResp{id: id, val: val, error: -int32(errno)}
	_, err := ioctl(listener, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
	return err
}

// proceed lets the call run in the kernel as the program made it.
func proceed(listener int, id uint64) error {
	r := notifResp{id: id, flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
	_, err := ioctl(listener, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
	return err
}

// installAt puts src, a descriptor of sockshim's, at descriptor number at of
// the thread waiting in notification id, replacing what is there (dup2).
func installAt(listener int, id uint64, src, at int, cloexec bool) error {
	if src < 0 || at < 0 {
		return errors.New("negative descriptor")
	}
	a := notifAddfd{id: id, flags: unix.SECCOMP_ADDFD_FLAG_SETFD, srcfd: uint32(src), newfd: uint32(at)}
	if cloexec {
		a.newfdFlags = unix.O_CLOEXEC
	}
	_, err := ioctl(listener, unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
	return err
}
