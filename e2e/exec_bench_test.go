package e2e

import (
	"fmt"
	"testing"

	"github.com/sockshim/sockshim/testenv"
)

// BenchmarkExecCosts is the exec-costs section of BenchmarkReport alone, a
// few seconds instead of ten minutes, for work on the trampoline's start:
//
//	go test ./e2e -run '^$' -bench ExecCosts -benchtime 1x
//
// It prints the table (a benchmark's log would be cut at 10 lines).
// SOCKSHIM_BENCH_EXECS sets the runs per row (default 300).
func BenchmarkExecCosts(b *testing.B) {
	if testenv.RaceEnabled {
		b.Skip("exec costs under the race detector say nothing about real starts")
	}
	bb := bins{sockshim: testenv.Build(b, "github.com/sockshim/sockshim/cmd/sockshim")}
	for b.Loop() {
		fmt.Print(execCosts(b, bb, envInt("SOCKSHIM_BENCH_EXECS", 300)))
	}
}
