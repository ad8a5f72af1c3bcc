package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/sockshim/sockshim/shim/config"
)

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config `file` to validate")
	if err := fs.Parse(args); err != nil || *path == "" || fs.NArg() > 0 {
		if *path == "" {
			fmt.Fprintln(stderr, "sockshim check: -c FILE is required")
		}
		return errUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	workers := 0
	for _, g := range cfg.Workers {
		workers += g.Count
	}
	fmt.Fprintf(stdout, "%s: ok (%d listeners, %d groups, %d workers)\n", *path, len(cfg.Listen), len(cfg.Workers), workers)
	return nil
}
