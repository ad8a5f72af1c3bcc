package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sockshim/sockshim/handoff"
	"github.com/sockshim/sockshim/internal/acceptwait"
	"github.com/sockshim/sockshim/shim/core"
)

// probeInterval is the pause between two runs of a ready_command.
const probeInterval = 200 * time.Millisecond

// errReadyTimeout is why a readiness probe ended when the worker's
// ready_timeout passed: then, and only then, the probe says what it saw
// last. Stopped for any other reason (ready, exited, let go), the worker's
// own event says what happened.
var errReadyTimeout = errors.New("ready_timeout passed")

// probeContext bounds a readiness probe by timeout; its cancel takes
// errReadyTimeout when the core says the ready_timeout passed (which it
// may see first), nil otherwise.
func probeContext(timeout time.Duration) (context.Context, context.CancelCauseFunc) {
	parent, cancel := context.WithCancelCause(context.Background())
	ctx, stop := context.WithTimeoutCause(parent, timeout, errReadyTimeout)
	return ctx, func(cause error) { cancel(cause); stop() }
}

// timedOut reports whether a probe's ctx ended at the ready_timeout.
func timedOut(ctx context.Context) bool { return errors.Is(context.Cause(ctx), errReadyTimeout) }

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
			if lastErr != nil && timedOut(ctx) {
				// The ready_timeout event reports the failure; this
				// adds why the probe kept failing.
				s.log.Warn("ready_command never succeeded", "worker", e.Config.Name+"["+strconv.Itoa(e.Slot)+"]",
					"pid", e.PID, "err", lastErr, "output", lastOut)
			}
			return
		}
	}
}

// The accept watch looks at once and then less and less often: a server
// usually waits for connections within milliseconds of its start, and each
// look reads /proc for each of the worker's processes and threads.
const (
	acceptFirstPoll = 5 * time.Millisecond
	acceptMaxPoll   = 100 * time.Millisecond
)

// acceptLoop is ready = "accepting": it reports the worker ready once its
// processes (members) wait for connections on every one of socks that they
// hold, and hold at least one (internal/acceptwait). When the ready_timeout
// passes first, it says which sockets had no process waiting, since the
// timeout alone does not tell a slow start from a socket the server never
// serves.
func (s *Supervisor) acceptLoop(ctx context.Context, e core.StartProbe, members func() []int, socks []handoff.Socket) {
	names, ids := map[string]string{}, map[string]bool{}
	for _, sock := range socks {
		id, err := socketID(sock)
		if err != nil {
			// Never ready, then: the ready_timeout reports the worker.
			s.log.Error("ready = accepting: cannot watch the worker", "worker", e.Config.Name+"["+strconv.Itoa(e.Slot)+"]", "err", err)
			return
		}
		names[id], ids[id] = sock.Name, true
	}
	var last acceptwait.Report
	var lastErr error
	for poll := acceptFirstPoll; ; poll = min(2*poll, acceptMaxPoll) {
		var pids []int
		if members != nil {
			pids = members()
		}
		last, lastErr = acceptwait.Scan(pids, ids)
		if lastErr == nil && last.Accepting() {
			s.post(core.Probed{Worker: e.Worker})
			return
		}
		select {
		case <-time.After(poll):
		case <-ctx.Done():
		}
		if ctx.Err() == nil {
			continue
		}
		if timedOut(ctx) {
			s.log.Warn("ready = accepting: the worker did not wait for connections on every socket it took over",
				append([]any{"worker", e.Config.Name + "[" + strconv.Itoa(e.Slot) + "]", "pid", e.PID}, acceptDiagnosis(last, lastErr, names)...)...)
		}
		return
	}
}

// acceptDiagnosis says what the last look of an accept watch saw, as log
// attributes.
func acceptDiagnosis(r acceptwait.Report, err error, names map[string]string) []any {
	if err != nil {
		return []any{"err", err}
	}
	if len(r.Held) == 0 {
		all := slices.Sorted(maps.Values(names))
		return []any{"held", "none", "sockets", all, "hint", "it did not bind or take any of them (with intercept_bind, does it bind the address the socket is bound to?)"}
	}
	var idle []string
	for _, id := range r.Idle() {
		idle = append(idle, names[id])
	}
	slices.Sort(idle)
	return []any{"not_waited_on", idle}
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
