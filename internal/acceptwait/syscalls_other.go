//go:build !amd64 && !arm64

package acceptwait

// Elsewhere only epoll sets are read: no system call numbers are carried.
var callKinds = map[int64]callKind{}
