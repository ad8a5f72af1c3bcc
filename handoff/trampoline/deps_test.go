package trampoline

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestLinksLittle: every package sockshim-handoff links runs its init at
// every worker start; these ones cost measurably (BenchmarkExecCosts).
func TestLinksLittle(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/sockshim/sockshim/cmd/sockshim-handoff").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	for _, p := range []string{"fmt", "os/exec", "reflect", "golang.org/x/sys/unix", "github.com/sockshim/sockshim/handoff"} {
		if slices.Contains(deps, p) {
			t.Errorf("sockshim-handoff links %s", p)
		}
	}
}
