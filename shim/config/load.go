package config

import (
	"errors"
	"fmt"
	"os"

	"github.com/BurntSushi/toml"
)

// Load reads and checks the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// ControlSocket returns the [control] socket set in the config file at
// path, or "" when there is none. Only a file that cannot be read or is not
// TOML is an error (with file and line): `sockshim reload` must reach the
// running supervisor even when the new config fails a check, so that the
// supervisor reports the problem (and keeps serving).
func ControlSocket(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	raw, err := decode(path, data)
	if err != nil {
		return "", err
	}
	// A [control] or socket of the wrong type is the supervisor's to report.
	ctl, _ := raw["control"].(map[string]any)
	socket, _ := ctl["socket"].(string)
	return socket, nil
}

// Parse checks the config text data; name is used in error messages and as
// Config.Path. Every problem found is reported, one per line, sorted by line.
func Parse(name string, data []byte) (*Config, error) {
	raw, err := decode(name, data)
	if err != nil {
		return nil, err
	}
	r := &reader{file: name, lines: lineIndex(string(data))}
	cfg := r.config(raw)
	if len(r.errs) > 0 {
		return nil, r.errs.sorted()
	}
	cfg.Path = name
	return cfg, nil
}

// decode reads data as TOML; a syntax error names file name and its line.
func decode(name string, data []byte) (map[string]any, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: name, Line: pe.Position.Line, Msg: "TOML syntax: " + pe.Message}
		}
		return nil, &Error{File: name, Msg: err.Error()}
	}
	return raw, nil
}

// CheckSocketNames reports every worker group that asks for a socket not in
// names (the names of the sockets actually held).
func (c *Config) CheckSocketNames(names []string) error {
	r := &reader{file: c.Path}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for i, g := range c.Workers {
		for _, s := range g.Sockets {
			if !have[s] {
				r.errorf(fmt.Sprintf("worker[%d].sockets", i), "socket %q does not exist (sockets held: %s)", s, quoteList(names))
			}
		}
	}
	if len(r.errs) > 0 {
		return r.errs
	}
	return nil
}
