// Package unixaddr holds the size limit of a unix socket address, shared by
// the config checks and the code that binds.
package unixaddr

import "golang.org/x/sys/unix"

// MaxPath is the longest unix socket path in bytes: sun_path holds 108 bytes
// on Linux, including the terminating NUL. Longer paths fail bind(2) and
// connect(2) with "invalid argument".
const MaxPath = len(unix.RawSockaddrUnix{}.Path) - 1
