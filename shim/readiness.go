package shim

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/sockshim/sockshim/shim/config"
)

// probeInterval is the pause between two runs of a ready_command.
const probeInterval = 200 * time.Millisecond

// watchReadiness arms what decides that a new worker serves: for "notify" the
// worker's own READY=1 (handled in the event loop), for "delay" a timer, for
// "command" a probe loop. ready_timeout bounds all three.
func (s *Supervisor) watchReadiness(w *worker) {
	cfg := w.cfg
	w.timer = time.AfterFunc(cfg.ReadyTimeout, func() { s.post(readyTimedOut{w: w}) })
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ReadyTimeout)
	w.cancelProbe = cancel
	switch cfg.Ready {
	case config.ReadyDelay:
		go func() {
			select {
			case <-time.After(cfg.ReadyDelay):
				s.post(probed{w: w})
			case <-ctx.Done():
			}
		}()
	case config.ReadyCommand:
		go s.probeLoop(ctx, w, cfg.ReadyCommand)
	}
}

// probeLoop runs the ready_command until it exits 0 or the ready_timeout
// passes. The probe sees which worker it is checking, so a probe can target
// one worker (say, by its pid) rather than whichever worker accepts first.
// The loop ends when ctx does (the ready_timeout passed, or the state
// goroutine gave up on the worker) and then logs why the last run failed.
func (s *Supervisor) probeLoop(ctx context.Context, w *worker, argv []string) {
	var lastErr error
	var lastOut string
	for {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(publicEnv(s.baseEnv),
			"SOCKSHIM_WORKER_PID="+strconv.Itoa(w.pid),
			"SOCKSHIM_WORKER_ID="+strconv.Itoa(w.id),
			"SOCKSHIM_GENERATION="+strconv.Itoa(w.gen),
			"SOCKSHIM_GROUP="+w.cfg.Name)
		cmd.WaitDelay = time.Second
		out, err := cmd.CombinedOutput()
		if err == nil {
			s.post(probed{w: w})
			return
		}
		if ctx.Err() == nil {
			// A run cut short by the deadline says nothing about the worker.
			lastErr, lastOut = err, strings.TrimSpace(string(out))
		}
		select {
		case <-time.After(probeInterval):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			if lastErr != nil {
				// The ready_timeout (or exit) event reports the failure;
				// this adds why the probe kept failing.
				s.log.Warn("ready_command never succeeded", "worker", w, "pid", w.pid, "err", lastErr, "output", lastOut)
			}
			return
		}
	}
}
