package shim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
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
		var out bytes.Buffer
		err := s.runProbe(ctx, argv, probeEnv(e.PID, e.Slot, e.Gen, e.Config.Name), &out, &out)
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

// probeEnv is what a ready_command or health_command sees besides
// sockshim's public environment: which worker it checks.
func probeEnv(pid, slot, gen int, group string) []string {
	return []string{
		"SOCKSHIM_WORKER_PID=" + strconv.Itoa(pid),
		"SOCKSHIM_WORKER_ID=" + strconv.Itoa(slot),
		"SOCKSHIM_GENERATION=" + strconv.Itoa(gen),
		"SOCKSHIM_GROUP=" + group,
	}
}

// runProbe runs argv once with env added to sockshim's public environment,
// until it exits or ctx ends.
func (s *Supervisor) runProbe(ctx context.Context, argv, env []string, stdout, stderr io.Writer) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(publicEnv(s.baseEnv), env...)
	cmd.WaitDelay = time.Second
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if s.reaper == nil {
		// Delegated: the probe runs in sockshim's own cgroup.
		if err := cmd.Start(); err != nil {
			return err
		}
		return cmd.Wait()
	}
	// Through the reaper, which must know every process sockshim starts.
	err := s.reaper.Start(cmd)
	if err == nil {
		err = cmd.Wait()
		s.reaper.Exited(cmd.Process.Pid)
	}
	return err
}

// healthLoop probes a baking worker every health_interval until ctx ends
// (StopProbe), and reports every run: a run that does not end within
// health_interval fails.
func (s *Supervisor) healthLoop(ctx context.Context, e core.StartHealth) {
	interval := e.Config.HealthInterval
	client := &http.Client{Timeout: interval}
	for {
		began := time.Now()
		run, cancel := context.WithTimeout(ctx, interval)
		var err error
		if len(e.Config.HealthCommand) > 0 {
			err = s.healthCommand(run, e)
		} else {
			err = healthGet(run, client, e.Config.HealthURL)
		}
		timedOut := run.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return // stopped: this run says nothing about the worker
		}
		if err != nil && timedOut {
			err = fmt.Errorf("no answer within health_interval (%s): %w", interval, err)
		}
		s.post(core.HealthChecked{Worker: e.Worker, Err: err})
		select {
		case <-time.After(time.Until(began.Add(interval))):
		case <-ctx.Done():
			return
		}
	}
}

// healthCommand runs the health_command once; a failure carries the last
// line it wrote to stderr.
func (s *Supervisor) healthCommand(ctx context.Context, e core.StartHealth) error {
	var stderr bytes.Buffer
	err := s.runProbe(ctx, e.Config.HealthCommand, probeEnv(e.PID, e.Slot, e.Gen, e.Config.Name), io.Discard, &limitedBuffer{b: &stderr, n: 64 << 10})
	if err == nil {
		return nil
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return fmt.Errorf("%w: %s", err, last)
	}
	return err
}

// healthGet GETs url once: a 2xx answer passes.
func healthGet(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// limitedBuffer keeps the last writes up to about n bytes.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.b.Len()+len(p) > l.n {
		keep := l.b.Bytes()[min(l.b.Len()+len(p)-l.n, l.b.Len()):]
		rest := append([]byte(nil), keep...)
		l.b.Reset()
		l.b.Write(rest)
	}
	l.b.Write(p)
	return len(p), nil
}
