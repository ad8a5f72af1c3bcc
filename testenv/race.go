//go:build race

package testenv

import "os"

// RaceEnabled reports whether the tests, and so the binaries Build makes,
// run with the race detector (which slows every figure down).
const RaceEnabled = true

// Every process the tests start inherits the environment, the systemd
// managers they boot included, so this reaches every race-built binary: a
// data race ends the process at once (exit status 66), which fails the
// test that provoked it instead of leaving a report in a log nobody reads;
// and a process exits without the detector's default 1 s pause, which
// would otherwise be added to every drain, stop and restart measured.
func init() {
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "halt_on_error=1 atexit_sleep_ms=0")
	}
}
