package trampoline

import (
	"errors"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

// Linux 5.9 brought SECCOMP_IOCTL_NOTIF_ADDFD, with which sockshim puts a
// held socket in the place of the worker's own; user notification itself
// (5.0) and SECCOMP_USER_NOTIF_FLAG_CONTINUE (5.5), with which a bind that
// matches nothing proceeds, are older. (SECCOMP_ADDFD_FLAG_SEND, 5.14,
// answers the call with the new descriptor's number: bind must return 0, so
// sockshim answers with a separate SECCOMP_IOCTL_NOTIF_SEND.)
const minKernelMajor, minKernelMinor = 5, 9

const seccompGetActionAvail = 2 // SECCOMP_GET_ACTION_AVAIL

// InterceptAvailable says why intercept_bind cannot work on this machine,
// or nil: the architecture, the kernel's version, and whether the kernel
// (or a sandbox around sockshim) offers seccomp user notification at all.
func InterceptAvailable() error {
	if !InterceptSupported {
		return errors.New("not supported on " + runtime.GOARCH + " (amd64 and arm64 are)")
	}
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return errors.New("uname: " + err.Error())
	}
	release := utsString(u.Release[:])
	if err := kernelRecentEnough(release); err != nil {
		return err
	}
	action := uint32(seccompRetUserNotif)
	if _, _, e := syscall.RawSyscall(sysSeccomp, seccompGetActionAvail, 0, uintptr(unsafe.Pointer(&action))); e != 0 {
		return errors.New("this kernel (" + release + ") does not offer seccomp user notification (SECCOMP_RET_USER_NOTIF): " + e.Error())
	}
	return nil
}

// kernelRecentEnough checks a kernel release string ("6.1.0-27-amd64").
func kernelRecentEnough(release string) error {
	major, minor, ok := kernelVersion(release)
	if !ok {
		return errors.New("cannot tell the kernel's version from its release " + strconv.Quote(release))
	}
	if major < minKernelMajor || major == minKernelMajor && minor < minKernelMinor {
		return errors.New("needs Linux " + strconv.Itoa(minKernelMajor) + "." + strconv.Itoa(minKernelMinor) +
			" or later (seccomp user notification with SECCOMP_IOCTL_NOTIF_ADDFD); this kernel is " + release)
	}
	return nil
}

// kernelVersion reads "MAJOR.MINOR" at the start of a release string.
func kernelVersion(release string) (major, minor int, ok bool) {
	nums := [2]int{}
	i := 0
	for k := range nums {
		start := i
		for i < len(release) && release[i] >= '0' && release[i] <= '9' {
			i++
		}
		if i == start {
			return 0, 0, false
		}
		n, err := strconv.Atoi(release[start:i])
		if err != nil {
			return 0, 0, false
		}
		nums[k] = n
		if k == 0 {
			if i >= len(release) || release[i] != '.' {
				return 0, 0, false
			}
			i++
		}
	}
	return nums[0], nums[1], true
}

// utsString converts a NUL-terminated utsname field (int8 on some
// architectures, uint8 on others).
func utsString[T int8 | uint8](b []T) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}
