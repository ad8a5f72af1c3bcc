package control

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// SocketPath is where the supervisor of configFile listens and where the
// reload and status commands look for it: the config's [control] socket if
// set, else /run/sockshim/NAME.sock for root, and for anyone else
// $XDG_RUNTIME_DIR/sockshim/NAME.sock or, without XDG_RUNTIME_DIR,
// /tmp/sockshim-UID/NAME.sock; NAME is the config file's base name without
// extension.
//
// It deliberately ignores systemd's RUNTIME_DIRECTORY: an operator's shell
// does not have it, and `sockshim status -c /etc/sockshim/myapp.toml` typed
// there must find the same socket that ExecStart= and ExecReload= use.
func SocketPath(configFile, configured string) string {
	if configured != "" {
		return configured
	}
	name := strings.TrimSuffix(filepath.Base(configFile), filepath.Ext(configFile))
	if name == "" || name == "." || name == string(filepath.Separator) {
		name = "default"
	}
	dir := "/run/sockshim"
	if uid := os.Getuid(); uid != 0 {
		if xdg := os.Getenv("XDG_RUNTIME_DIR"); xdg != "" {
			dir = filepath.Join(xdg, "sockshim")
		} else {
			// No login session (su, a container): /run is root's, so a
			// directory of this user's own under /tmp; Listen checks that
			// nobody else owns it.
			dir = filepath.Join(os.TempDir(), "sockshim-"+strconv.Itoa(uid))
		}
	}
	return filepath.Join(dir, name+".sock")
}
