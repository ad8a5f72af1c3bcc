package core

import "time"

const (
	backoffBase = 100 * time.Millisecond
	backoffMax  = 30 * time.Second
	// stableAfter is how long a worker must have been ready before its exit
	// is treated as a one-off rather than part of a crash loop.
	stableAfter = 10 * time.Second
)

// backoff returns the delay before restart number n (1-based) of a crash
// loop: 100ms, 200ms, 400ms, … capped at 30s, so a worker that can never start
// costs a few exec()s a minute, not a busy loop.
func backoff(n int) time.Duration {
	d := backoffBase
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}
