package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The checks in this file look at the machine the config is loaded on:
// a config that passes them can start its workers here.

// workDir checks a [[worker]] dir: absolute, existing, a directory.
func workDir(dir string) error {
	if !strings.HasPrefix(dir, "/") {
		return fmt.Errorf("%q is not an absolute path", dir)
	}
	return isDir(dir)
}

// socketDir checks that the directory of a unix socket file exists; sockshim
// binds the socket there but does not create directories for it.
func socketDir(l Listen) error {
	if l.Network != "unix" && l.Network != "unixgram" && l.Network != "unixpacket" || strings.HasPrefix(l.Addr, "@") {
		return nil
	}
	return isDir(filepath.Dir(l.Addr))
}

func isDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %s does not exist", dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}
