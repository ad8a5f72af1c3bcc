//go:build race

package testenv

// RaceEnabled reports whether the tests, and so the binaries Build makes,
// run with the race detector (which slows every figure down).
const RaceEnabled = true
