package trampoline

import (
	"errors"
	"strconv"
	"strings"
	"syscall"
)

// lookPath is os/exec.LookPath without os/exec, with its results and error
// texts, for the PATH of this process's environment, which is the worker's.
// It runs before the handoff, so a command that cannot run fails at once.
func lookPath(file string) (string, error) {
	if strings.Contains(file, "/") {
		if err := findExecutable(file); err != nil {
			return "", errors.New("exec: " + strconv.Quote(file) + ": " + err.Error())
		}
		return file, nil
	}
	// An empty PATH has no directory, not "." (filepath.SplitList).
	if path, _ := syscall.Getenv("PATH"); path != "" {
		for dir := range strings.SplitSeq(path, ":") {
			if dir == "" {
				// Unix shell semantics: path element "" means "."
				dir = "."
			}
			p := strings.TrimSuffix(dir, "/") + "/" + file
			if findExecutable(p) == nil {
				if !strings.HasPrefix(p, "/") {
					return "", errors.New("exec: " + strconv.Quote(file) + ": cannot run executable found relative to current directory")
				}
				return p, nil
			}
		}
	}
	return "", errors.New("exec: " + strconv.Quote(file) + ": executable file not found in $PATH")
}

// findExecutable is os/exec's test: not a directory, and executable by this
// process's effective ids (or, where faccessat2 is unavailable or refused,
// by anyone).
func findExecutable(p string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return errors.New("stat " + p + ": " + err.Error())
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return syscall.EISDIR
	}
	err := syscall.Faccessat(atFDCWD, p, xOK, atEACCESS)
	if err == syscall.ENOSYS || err == syscall.EPERM {
		if st.Mode&0o111 != 0 {
			return nil
		}
		return syscall.EACCES
	}
	return err
}
