package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sockshim/sockshim/shim/config"
	"github.com/sockshim/sockshim/shim/control"
)

// controlFlags parses -c FILE and resolves the control socket the way the
// supervisor does, reading the config only for a [control] socket. Without
// -c it is the socket of `sockshim run` on its embedded default.
func controlFlags(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config `file` of the running supervisor (default: the embedded example's)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "sockshim %s: unexpected argument %q\n", name, fs.Arg(0))
		}
		return "", errUsage
	}
	if *path == "" {
		return control.SocketPath(defaultName, ""), nil
	}
	// Only a file that is not TOML stops here: a config that fails its
	// checks must still reach the supervisor, which re-reads it and reports
	// the error with its own context.
	configured, err := config.ControlSocket(*path)
	if err != nil {
		return "", fmt.Errorf("%w; the running supervisor was not contacted", err)
	}
	return control.SocketPath(*path, configured), nil
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	sock, err := controlFlags("reload", args, stderr, nil)
	if err != nil {
		return err
	}
	start := time.Now()
	reply, err := control.Call(sock, control.Request{Command: "reload"}, func(line string) {
		fmt.Fprintf(stdout, "%s\n", line)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s (reload took %s)\n", reply.Message, time.Since(start).Round(time.Millisecond))
	return nil
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	var asJSON bool
	sock, err := controlFlags("status", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	reply, err := control.Call(sock, control.Request{Command: "status"}, nil)
	if err != nil {
		return err
	}
	st := reply.Status
	if st == nil {
		return fmt.Errorf("supervisor at %s sent no status", sock)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(stdout, "sockshim pid %d, %s, up %s, %d reloads\n%s\n%s\n\n", st.PID, st.State,
		time.Since(st.Started).Round(time.Second), st.Reloads, st.Line, countersLine(st.Counters))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tID\tPID\tGEN\tSTATE\tREADY AFTER\tUPTIME\tRESTARTS\tCPU\tMEMORY\tSTATUS")
	for _, g := range st.Groups {
		for _, w := range g.Workers {
			readyAfter := "-"
			if !w.ReadyAt.IsZero() {
				readyAfter = w.ReadyAt.Sub(w.Started).Round(time.Millisecond).String()
			}
			cpu, mem := "-", "-"
			if w.CPU != nil {
				cpu = w.CPU.Round(time.Millisecond).String()
			}
			if w.Memory != nil {
				mem = fmt.Sprintf("%.1fM", float64(*w.Memory)/(1<<20))
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", g.Name, w.ID, w.PID, w.Generation, w.State,
				readyAfter, w.Uptime.Round(time.Second), w.Restarts, cpu, mem, strings.ReplaceAll(w.Status, "\t", " "))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Groups that a reload signals instead of replacing.
	sep := "\n"
	for _, g := range st.Groups {
		if g.ReloadSignal == "" {
			continue
		}
		sent := "not sent yet"
		if !g.LastReloadSignal.IsZero() {
			sent = fmt.Sprintf("sent on %d reloads, last %s ago", g.ReloadSignalsSent, time.Since(g.LastReloadSignal).Round(time.Second))
		}
		fmt.Fprintf(stdout, "%s%s: reload_signal %s %s\n", sep, g.Name, g.ReloadSignal, sent)
		sep = ""
	}
	return nil
}

// countersLine sums up the counters in one line, e.g. "reloads: 7
// succeeded, 2 failed (config 1, exit 1); workers: 3 respawned, 14 drained,
// 2 killed at drain_timeout", and each socket a worker shut down. status
// -json has them all.
func countersLine(c control.Counters) string {
	var causes []string
	for _, cause := range []string{"config", "spawn", "exit", "ready_timeout", "health", "stopped"} {
		if n := c.FailedByCause[cause]; n > 0 {
			causes = append(causes, fmt.Sprintf("%s %d", cause, n))
		}
	}
	line := fmt.Sprintf("reloads: %d succeeded, %d failed", c.ReloadsSucceeded, c.ReloadsFailed)
	if len(causes) > 0 {
		line += " (" + strings.Join(causes, ", ") + ")"
	}
	var respawns, drains, kills int
	for _, g := range c.Groups {
		respawns, drains, kills = respawns+g.Respawns, drains+g.Drains, kills+g.DeadlineKills
	}
	line += fmt.Sprintf("; workers: %d respawned, %d drained, %d killed at drain_timeout", respawns, drains, kills)
	for _, sc := range c.Sockets {
		if sc.Shutdowns > 0 {
			line += fmt.Sprintf("; socket %s: shut down %d times by a process that holds it, %d repaired", sc.Name, sc.Shutdowns, sc.Relistened)
		}
	}
	return line
}
