package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// version is set at build time: -ldflags "-X main.version=$(git describe)".
var version = "dev"

func cmdVersion(w io.Writer) error {
	fmt.Fprintf(w, "sockshim %s\n", version)
	if bi, ok := debug.ReadBuildInfo(); ok {
		fmt.Fprintf(w, "go: %s\n", bi.GoVersion)
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision", "vcs.time", "vcs.modified":
				fmt.Fprintf(w, "%s: %s\n", s.Key, s.Value)
			}
		}
	}
	return nil
}
