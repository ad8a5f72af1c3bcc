package shim

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/sockshim/sockshim/shim/core"
)

// probeInterval is the pause between two runs of a ready_command.
const probeInterval = 200 * time.Millisecond

// probeLoop runs the ready_command until it exits 0 or ctx ends (the
// ready_timeout passed, or the machine gave up on the worker), and then logs
// why the last run failed. The probe sees which worker it is checking, so it
// can target one worker (say, by its pid) rather than whichever accepts
// first.
func (s *Supervisor) probeLoop(ctx context.Context, e core.StartProbe) {
	argv := e.Config.ReadyCommand
	var lastErr error
	var lastOut string
	for {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(publicEnv(s.baseEnv),
			"SOCKSHIM_WORKER_PID="+strconv.Itoa(e.PID),
			"SOCKSHIM_WORKER_ID="+strconv.Itoa(e.Slot),
			"SOCKSHIM_GENERATION="+strconv.Itoa(e.Gen),
			"SOCKSHIM_GROUP="+e.Config.Name)
		cmd.WaitDelay = time.Second
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		// Through the reaper, which must know every process sockshim starts.
		err := s.reaper.Start(cmd)
		if err == nil {
			err = cmd.Wait()
			s.reaper.Exited(cmd.Process.Pid)
		}
		if err == nil {
			s.post(core.Probed{Worker: e.Worker})
			return
		}
		if ctx.Err() == nil {
			// A run cut short by the deadline says nothing about the worker.
			lastErr, lastOut = err, strings.TrimSpace(out.String())
		}
		select {
		case <-time.After(probeInterval):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			if lastErr != nil {
				// The ready_timeout (or exit) event reports the failure;
				// this adds why the probe kept failing.
				s.log.Warn("ready_command never succeeded", "worker", e.Config.Name+"["+strconv.Itoa(e.Slot)+"]",
					"pid", e.PID, "err", lastErr, "output", lastOut)
			}
			return
		}
	}
}
