package notify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The workers' sockets live in one directory per sockshim process,
// notify.PID in sockshim's runtime directory. It exists while any proxy is
// open: the first Listen creates it, the last Close removes it, so it is
// gone once sockshim has reaped its last worker.
var shared struct {
	sync.Mutex
	dir   string
	users int
}

// runtimeDir is the directory of sockshim's default control socket (see
// control.SocketPath): /run/sockshim for root, else $XDG_RUNTIME_DIR/sockshim
// or /tmp/sockshim-UID.
func runtimeDir() string {
	uid := os.Getuid()
	switch xdg := os.Getenv("XDG_RUNTIME_DIR"); {
	case uid == 0:
		return "/run/sockshim"
	case xdg != "":
		return filepath.Join(xdg, "sockshim")
	default:
		return filepath.Join(os.TempDir(), "sockshim-"+strconv.Itoa(uid))
	}
}

// acquireDir returns the notify directory, creating it for the first user.
func acquireDir() (string, error) {
	shared.Lock()
	defer shared.Unlock()
	if shared.users == 0 {
		dir, err := makeDir(runtimeDir())
		if err != nil {
			return "", fmt.Errorf("notify socket directory: %w", err)
		}
		shared.dir = dir
	}
	shared.users++
	return shared.dir, nil
}

// releaseDir removes the notify directory when its last user is gone.
func releaseDir() {
	shared.Lock()
	defer shared.Unlock()
	if shared.users--; shared.users == 0 {
		_ = os.Remove(shared.dir)
	}
}

// makeDir creates base/notify.PID with mode 0711: workers of other users may
// reach their own socket in it but not list it, and only sockshim's uid can
// create anything there. base itself is checked as the control socket's
// directory is: a real directory of root or sockshim's uid that nobody else
// may write.
func makeDir(base string) (string, error) {
	uid := os.Getuid()
	mode := os.FileMode(0o700)
	if uid == 0 {
		// The unit's RuntimeDirectoryMode=: workers that run as other
		// users must be able to search it.
		mode = 0o755
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return "", err
	}
	if err := os.Mkdir(base, mode); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	fi, err := os.Lstat(base)
	if err != nil {
		return "", err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode().Type() == os.ModeSymlink:
		return "", fmt.Errorf("%s is a symlink, not a directory", base)
	case !fi.IsDir():
		return "", fmt.Errorf("%s is not a directory", base)
	case st == nil:
		return "", fmt.Errorf("%s: no owner information", base)
	case st.Uid != 0 && int(st.Uid) != uid:
		return "", fmt.Errorf("%s belongs to uid %d, not to root or sockshim's uid %d", base, st.Uid, uid)
	case fi.Mode().Perm()&0o022 != 0:
		return "", fmt.Errorf("%s is writable by others (mode %v)", base, fi.Mode().Perm())
	}
	if uid == 0 && fi.Mode().Perm()&0o011 != 0o011 {
		// control.Listen creates it 0700 when sockshim runs outside its
		// unit. Search permission lets no one list or change it; the
		// control socket in it is 0600.
		if err := os.Chmod(base, fi.Mode().Perm()|0o011); err != nil {
			return "", err
		}
	}
	removeStale(base)
	dir := filepath.Join(base, "notify."+strconv.Itoa(os.Getpid()))
	// Only root or this uid can write base, so a directory already there is
	// what an earlier process with this pid left when it died.
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		return "", err
	}
	// The umask may have taken bits away.
	if err := os.Chmod(dir, 0o711); err != nil {
		os.Remove(dir)
		return "", err
	}
	return dir, nil
}

// removeStale removes the notify directories that sockshim processes killed
// with SIGKILL left in base: those whose pid no longer exists. A reused pid
// keeps its directory until that process exits.
func removeStale(base string) {
	stale, _ := filepath.Glob(filepath.Join(base, "notify.*"))
	for _, dir := range stale {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "notify."))
		if err == nil && pid > 0 && errors.Is(unix.Kill(pid, 0), unix.ESRCH) {
			_ = os.RemoveAll(dir)
		}
	}
}

// allowUser lets uid send to the socket file at path, which belongs to
// sockshim and has mode 0600. Sending on a unix datagram socket needs write
// permission on its file. An access ACL needs no capability (sockshim owns
// the file), whereas chown needs CAP_CHOWN, which the shipped unit does not
// keep; chown is the fallback for a file system without ACLs.
func allowUser(path string, uid int) error {
	err := unix.Setxattr(path, "system.posix_acl_access", userACL(uint32(uid)), 0)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = os.Lchown(path, uid, -1)
	}
	if err != nil {
		return fmt.Errorf("giving uid %d access to %s: %w", uid, path, err)
	}
	return nil
}

// userACL encodes the POSIX ACL u::rw-,u:UID:rw-,g::---,m::rw-,o::--- in the
// kernel's xattr format (linux/posix_acl_xattr.h): a little-endian version
// 2 header, then entries of tag, permissions and id, sorted by tag.
func userACL(uid uint32) []byte {
	const (
		userObj, user, groupObj, mask, other = 0x01, 0x02, 0x04, 0x10, 0x20
		rw                                   = 6
		noID                                 = ^uint32(0)
	)
	entries := []struct {
		tag, perm uint16
		id        uint32
	}{{userObj, rw, noID}, {user, rw, uid}, {groupObj, 0, noID}, {mask, rw, noID}, {other, 0, noID}}
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}
