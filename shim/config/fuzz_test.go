package config

import (
	"bytes"
	"testing"
)

// FuzzParse: no input makes the loader panic, and every error is a *Error or
// Errors that names the file and a line inside it (or none).
func FuzzParse(f *testing.F) {
	f.Add([]byte(worker))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.toml", data)
		if err == nil {
			if cfg == nil || cfg.Path != "fuzz.toml" || len(cfg.Workers) == 0 {
				t.Fatalf("no error, config %+v", cfg)
			}
			return
		}
		var es Errors
		switch e := err.(type) {
		case *Error:
			es = Errors{e}
		case Errors:
			es = e
		default:
			t.Fatalf("error of type %T: %v", err, err)
		}
		if len(es) == 0 {
			t.Fatal("empty Errors")
		}
		lines := bytes.Count(data, []byte("\n")) + 1
		for _, e := range es {
			if e.File != "fuzz.toml" || e.Msg == "" || e.Line < 0 || e.Line > lines {
				t.Errorf("error %q: file %q, line %d of %d", e, e.File, e.Line, lines)
			}
		}
	})
}
