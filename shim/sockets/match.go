package sockets

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sockshim/sockshim/handoff"
)

// Names returns the distinct socket names in order of first appearance.
func Names(socks []handoff.Socket) []string {
	var names []string
	for _, s := range socks {
		if !slices.Contains(names, s.Name) {
			names = append(names, s.Name)
		}
	}
	return names
}

// CheckInherited verifies that sockets passed by the service manager are the
// ones the config describes. A config without [[listen]] accepts any set.
// Otherwise the name sets must be equal, and the error lists both differences
// so an operator can fix either the .socket unit or the config.
func CheckInherited(passed []handoff.Socket, configured []string) error {
	if len(configured) == 0 {
		return nil
	}
	have := Names(passed)
	var missing, extra []string
	for _, n := range configured {
		if !slices.Contains(have, n) {
			missing = append(missing, n)
		}
	}
	for _, n := range have {
		if !slices.Contains(configured, n) {
			extra = append(extra, n)
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return nil
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, fmt.Sprintf("configured but not passed: %s", strings.Join(missing, ", ")))
	}
	if len(extra) > 0 {
		parts = append(parts, fmt.Sprintf("passed but not configured: %s", strings.Join(extra, ", ")))
	}
	return fmt.Errorf("sockets passed by the service manager do not match [[listen]] (%s); set FileDescriptorName= in the .socket unit or rename the [[listen]] entries",
		strings.Join(parts, "; "))
}

// Select returns the sockets a worker group asked for, in the order they were
// passed; nil wanted means all of them.
func Select(socks []handoff.Socket, wanted []string) []handoff.Socket {
	if wanted == nil {
		return socks
	}
	var out []handoff.Socket
	for _, s := range socks {
		if slices.Contains(wanted, s.Name) {
			out = append(out, s)
		}
	}
	return out
}
