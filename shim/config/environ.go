package config

import "strings"

// ReservedEnv reports whether sockshim reserves the environment variable key:
// the socket-activation and notify variables it sets for each worker
// (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, NOTIFY_SOCKET, SOCKSHIM_*) and the
// watchdog variables of its own service manager (WATCHDOG_USEC,
// WATCHDOG_PID). A worker's env cannot set them, and sockshim's own values
// are not inherited by workers: a worker that inherited NOTIFY_SOCKET or
// WATCHDOG_* would talk to systemd behind sockshim's back, and stale LISTEN_*
// would describe descriptors the worker does not have.
func ReservedEnv(key string) bool {
	switch key {
	case "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID":
		return true
	}
	return strings.HasPrefix(key, "SOCKSHIM_")
}
