package config

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// Credential resolves a [[worker]]'s user and group, each a name or a numeric
// id, into the credential its processes run with. An empty user keeps
// sockshim's uid; an empty group means the user's primary group (or
// sockshim's gid when user is empty too). Supplementary groups are exactly
// the group when one is set; with only a user, the user's own memberships,
// as systemd's User= gives them; with neither, none. The worker never
// inherits sockshim's. Parse checks the same lookups, so an error here means
// the system changed since the config was loaded.
func Credential(userName, groupName string) (*syscall.Credential, error) {
	cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), Groups: []uint32{}}
	if userName != "" {
		uid, gid, err := lookupUser(userName)
		if err != nil {
			return nil, err
		}
		cred.Uid, cred.Gid = uid, gid
		if groupName == "" {
			if cred.Groups, err = memberships(uid); err != nil {
				return nil, fmt.Errorf("user %q: %w", userName, err)
			}
		}
	}
	if groupName != "" {
		gid, err := lookupGroup(groupName)
		if err != nil {
			return nil, err
		}
		cred.Gid, cred.Groups = gid, []uint32{gid}
	}
	return cred, nil
}

// lookupUser returns the uid and primary gid of a user name, or of a numeric
// uid when no user has that name.
func lookupUser(name string) (uid, gid uint32, err error) {
	u, err := user.Lookup(name)
	if errors.As(err, new(user.UnknownUserError)) {
		if _, numErr := strconv.ParseUint(name, 10, 32); numErr == nil {
			u, err = user.LookupId(name)
		}
	}
	switch {
	case errors.As(err, new(user.UnknownUserError)), errors.As(err, new(user.UnknownUserIdError)):
		return 0, 0, fmt.Errorf("no such user %q", name)
	case err != nil:
		return 0, 0, fmt.Errorf("user %q: %w", name, err)
	}
	if uid, err = parseID(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("user %q: uid: %w", name, err)
	}
	if gid, err = parseID(u.Gid); err != nil {
		return 0, 0, fmt.Errorf("user %q: primary group: %w", name, err)
	}
	return uid, gid, nil
}

// lookupGroup returns the gid of a group name, or of a numeric gid when no
// group has that name.
func lookupGroup(name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	if errors.As(err, new(user.UnknownGroupError)) {
		if _, numErr := strconv.ParseUint(name, 10, 32); numErr == nil {
			g, err = user.LookupGroupId(name)
		}
	}
	switch {
	case errors.As(err, new(user.UnknownGroupError)), errors.As(err, new(user.UnknownGroupIdError)):
		return 0, fmt.Errorf("no such group %q", name)
	case err != nil:
		return 0, fmt.Errorf("group %q: %w", name, err)
	}
	gid, err := parseID(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %q: gid: %w", name, err)
	}
	return gid, nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a numeric id", s)
	}
	return uint32(n), nil
}

// memberships lists the gids of the groups user uid belongs to, its primary
// group included.
func memberships(uid uint32) ([]uint32, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, err
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("supplementary groups: %w", err)
	}
	gids := make([]uint32, 0, len(ids))
	for _, id := range ids {
		gid, err := parseID(id)
		if err != nil {
			return nil, fmt.Errorf("supplementary group %q: %w", id, err)
		}
		gids = append(gids, gid)
	}
	return gids, nil
}
