package control

import (
	"os"
	"path/filepath"
	"strings"
)

// SocketPath is where the supervisor of configFile listens and where the
// reload and status commands look for it: the config's [control] socket if
// set, else /run/sockshim/NAME.sock for root or
// $XDG_RUNTIME_DIR/sockshim/NAME.sock for anyone else, NAME being the config
// file's base name without extension.
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
	if os.Getuid() != 0 {
		if xdg := os.Getenv("XDG_RUNTIME_DIR"); xdg != "" {
			dir = filepath.Join(xdg, "sockshim")
		}
	}
	return filepath.Join(dir, name+".sock")
}
