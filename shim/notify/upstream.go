package notify

import (
	"fmt"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Upstream reports sockshim's own state to the service manager named by
// NOTIFY_SOCKET. Without one (a standalone run) it does nothing.
type Upstream struct {
	enabled bool
}

// NewUpstream captures whether sockshim runs under a notify-aware manager.
// The environment is left as it is; workers get theirs rebuilt explicitly.
func NewUpstream() *Upstream {
	return &Upstream{enabled: os.Getenv("NOTIFY_SOCKET") != ""}
}

// Enabled reports whether there is a manager to notify.
func (u *Upstream) Enabled() bool { return u != nil && u.enabled }

// Send writes one datagram made of the given KEY=VALUE lines.
func (u *Upstream) Send(lines ...string) error {
	if !u.Enabled() {
		return nil
	}
	state := strings.Join(lines, "\n")
	if len(state) > 4000 {
		// systemd drops datagrams it cannot fit in its buffer; better a
		// shortened STATUS than no message at all.
		state = state[:4000]
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
