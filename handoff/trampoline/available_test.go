package trampoline

import (
	"strings"
	"testing"
)

func TestKernelRecentEnough(t *testing.T) {
	for _, c := range []struct {
		release string
		want    string // "" for no error
	}{
		{"6.18.44-fc-v1272", ""},
		{"5.9.0", ""},
		{"5.10.0-28-amd64", ""},
		{"6.1.0-27-amd64", ""},
		{"5.8.18", "needs Linux 5.9 or later (seccomp user notification with SECCOMP_IOCTL_NOTIF_ADDFD); this kernel is 5.8.18"},
		{"4.19.0-26-amd64", "this kernel is 4.19.0-26-amd64"},
		{"", `cannot tell the kernel's version from its release ""`},
		{"6", "cannot tell"},
		{"v6.1", "cannot tell"},
		{"6.x", "cannot tell"},
	} {
		err := kernelRecentEnough(c.release)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.release, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: error %v, want it to contain %q", c.release, err, c.want)
		}
	}
}

// TestInterceptAvailableHere: every machine this project runs its tests on
// has a kernel with the feature; a failure names what is missing.
func TestInterceptAvailableHere(t *testing.T) {
	if err := InterceptAvailable(); err != nil {
		t.Fatal(err)
	}
}
