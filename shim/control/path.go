package control

import (
	"os"
	"path/filepath"
	"strings"
)

// SocketPath is where the supervisor of configFile listens and where the
// reload and status commands look for it: the config's [control] socket if
// set, else control.sock in systemd's RuntimeDirectory= (set for ExecStart=
// and ExecReload= alike), else /run/sockshim/NAME.sock for root or
// $XDG_RUNTIME_DIR/sockshim/NAME.sock for anyone else, NAME being the config
// file's base name without extension.
func SocketPath(configFile, configured string) string {
	if configured != "" {
		return configured
	}
	if dirs := os.Getenv("RUNTIME_DIRECTORY"); dirs != "" {
		first, _, _ := strings.Cut(dirs, ":")
		return filepath.Join(first, "control.sock")
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
