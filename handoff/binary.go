package handoff

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/sockshim/sockshim/handoff/trampoline"
)

// BinaryName is the trampoline's own binary. It links nothing but package
// trampoline, so a worker start costs what a Go program that only execs
// costs, within the noise (BenchmarkExecCosts); sockshim's own binary runs
// the init of every package it links (net/http, crypto, TOML …) and takes
// about twice as long.
const BinaryName = trampoline.BinaryName

// ImageFD is where a starting trampoline finds the binary it is exec'd from
// (the second of exec.Cmd.ExtraFiles, after HandoffFD).
const ImageFD = HandoffFD + 1

// ImagePath is what the child execs: its own descriptor ImageFD, so every
// worker starts from the image the supervisor opened at start-up, whatever
// a package upgrade has since done to the file on disk. (A descriptor number
// chosen by the parent would not do: forking code may reuse any number above
// the ones it places.)
var ImagePath = "/proc/self/fd/" + strconv.Itoa(ImageFD)

// Binary is the opened trampoline image.
type Binary struct {
	File *os.File // pass as ExtraFiles[1], i.e. ImageFD
	Path string   // where it was found, for logs
	// Own is true when no sockshim-handoff was found and sockshim's own
	// binary is the trampoline: correct, but each worker start pays for
	// sockshim's package inits.
	Own bool
}

// OpenBinary opens the trampoline image: BinaryName beside the executable
// self (a build tree, a tarball), or in ../libexec/sockshim/ relative to it
// (/usr/bin/sockshim → /usr/libexec/sockshim/, where the packages install
// it), or else sockshim's own image. The image runs as every worker's user,
// so a candidate that a user other than root or sockshim's own could have
// written or replaced is an error, never silently used or skipped.
func OpenBinary(self string) (*Binary, error) {
	dir := filepath.Dir(self)
	for _, p := range []string{
		filepath.Join(dir, BinaryName),
		filepath.Join(dir, "..", "libexec", "sockshim", BinaryName),
	} {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("trampoline: %w", err)
		}
		if err := trusted(f, p); err != nil {
			f.Close()
			return nil, fmt.Errorf("trampoline: %w", err)
		}
		return &Binary{File: f, Path: filepath.Clean(p)}, nil
	}
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("trampoline: sockshim's own image: %w", err)
	}
	return &Binary{File: f, Path: self, Own: true}, nil
}

// trusted checks that only root or this process's user can have written f
// or changed which file its directory names: owner one of them, and neither
// the file nor its directory writable by group or others (a sticky directory
// like /tmp is fine: others cannot replace a file they do not own there).
func trusted(f *os.File, path string) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if err := safeOwner(fi, path, false); err != nil {
		return err
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return err
	}
	return safeOwner(di, filepath.Dir(path), di.Mode()&fs.ModeSticky != 0)
}

func safeOwner(fi fs.FileInfo, path string, sticky bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner information", path)
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d, not root or sockshim's user (uid %d)", path, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 && !sticky {
		return fmt.Errorf("%s is writable by group or others (mode %04o)", path, fi.Mode().Perm())
	}
	return nil
}
