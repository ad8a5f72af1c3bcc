package shim

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/sockshim/sockshim/shim/config"
)

// workerEnv builds a worker's environment: sockshim's own minus the reserved
// variables, then the group's env (sorted, so runs are reproducible), then the
// variables sockshim defines. LISTEN_* are added by the trampoline, which is
// the only process that knows the final pid and descriptor numbers.
func workerEnv(base []string, extra map[string]string, notifyAddr string, gen, id int, group string) []string {
	env := make([]string, 0, len(base)+len(extra)+4)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, overridden := extra[k]; overridden || config.ReservedEnv(k) {
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

// publicEnv is base without the variables sockshim reserves.
func publicEnv(base []string) []string {
	var env []string
	for _, kv := range base {
		if k, _, _ := strings.Cut(kv, "="); !config.ReservedEnv(k) {
			env = append(env, kv)
		}
	}
	return env
}
