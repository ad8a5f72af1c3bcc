package sockets

import (
	"slices"

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
