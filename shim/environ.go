package shim

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// privateEnv reports whether a variable of sockshim's own environment belongs
// to sockshim's relationship with its service manager and must not be seen by
// workers: a worker that inherited NOTIFY_SOCKET or WATCHDOG_* would talk to
// systemd behind sockshim's back, and stale LISTEN_* would describe fds the
// worker does not have.
func privateEnv(key string) bool {
	switch key {
	case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES":
		return true
	}
	return strings.HasPrefix(key, "SOCKSHIM_")
}

// workerEnv builds a worker's environment: sockshim's own minus the private
// variables, then the group's env (sorted, so runs are reproducible), then the
// variables sockshim defines. LISTEN_* are added by the trampoline, which is
// the only process that knows the final pid and descriptor numbers.
func workerEnv(base []string, extra map[string]string, notifyAddr string, gen, id int, group string) []string {
	env := make([]string, 0, len(base)+len(extra)+4)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, overridden := extra[k]; overridden || privateEnv(k) {
			continue
		}
		env = append(env, kv)
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		env = append(env, k+"="+extra[k])
	}
	return append(env,
		"NOTIFY_SOCKET="+notifyAddr,
		"SOCKSHIM_GENERATION="+strconv.Itoa(gen),
		"SOCKSHIM_WORKER_ID="+strconv.Itoa(id),
		"SOCKSHIM_GROUP="+group,
	)
}

// publicEnv is base without sockshim's private variables.
func publicEnv(base []string) []string {
	var env []string
	for _, kv := range base {
		if k, _, _ := strings.Cut(kv, "="); !privateEnv(k) {
			env = append(env, kv)
		}
	}
	return env
}
