package sockets

import (
	"fmt"
	"log/slog"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/fdstore"
)

// Open returns one socket per [[listen]] entry, in the config's order: the
// socket the service manager passed under the entry's name (a .socket
// unit's, or one sockshim stored at an earlier start) when Adopt takes it,
// and otherwise a new one, bound here and put in store, so that a crash or
// restart of sockshim finds it there and connections wait in its backlog
// meanwhile instead of being refused. Passed sockets that no entry names,
// or that Adopt refuses, are closed and leave the store. On error every
// socket is closed.
func Open(listens []config.Listen, passed []handoff.Socket, store *fdstore.Store, log *slog.Logger) ([]handoff.Socket, error) {
	byName := map[string][]handoff.Socket{}
	for _, p := range passed {
		byName[p.Name] = append(byName[p.Name], p)
	}
	var out []handoff.Socket
	fail := func(err error) ([]handoff.Socket, error) {
		Close(out)
		for _, ps := range byName {
			Close(ps)
		}
		return nil, err
	}
	for _, l := range listens {
		ps := byName[l.Name]
		delete(byName, l.Name)
		if len(ps) > 0 {
			err := Adopt(ps[0].File, l)
			if err == nil && len(ps) == 1 {
				log.Info("listening on a socket passed by the service manager", "name", l.Name, "address", l.Address)
				out = append(out, ps[0])
				continue
			}
			// Duplicates too: one stored twice is stored anew, once.
			Close(ps[1:])
			if err != nil {
				log.Warn("a socket passed by the service manager is not the configured one: binding anew", "name", l.Name, "err", err)
				Close(ps[:1])
				ps = nil
			}
			if err := store.Remove(l.Name); err != nil {
				log.Warn("the fd store keeps a stale socket", "name", l.Name, "err", err)
			}
		}
		var s handoff.Socket
		if len(ps) > 0 {
			s = ps[0]
		} else {
			f, err := bindOne(l)
			if err != nil {
				return fail(fmt.Errorf("listen %q (%s): %w", l.Name, l.Address, err))
			}
			s = handoff.Socket{Name: l.Name, File: f}
			log.Info("listening", "name", l.Name, "address", l.Address)
		}
		out = append(out, s)
		if err := store.Add(l.Name, s.File); err != nil {
			log.Warn("the socket is not in the fd store: a crash of sockshim will close it", "name", l.Name, "err", err)
		}
	}
	for name, ps := range byName {
		log.Warn("a socket passed by the service manager has no [[listen]] entry: closed, and removed from the fd store",
			"name", name, "count", len(ps), "hint", "a socket an earlier config had, or a .socket unit's FileDescriptorName= that the config does not name")
		Close(ps)
		if err := store.Remove(name); err != nil {
			log.Warn("the fd store keeps a stale socket", "name", name, "err", err)
		}
	}
	return out, nil
}
