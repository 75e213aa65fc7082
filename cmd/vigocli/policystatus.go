package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

func newPolicyStatusCmd(g *globals) *cobra.Command {
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the server's policy: revision, Ready/Reconciling/Stalled, the last attempt (exit 1 when unhealthy)",
		Long: `Shows, like flux get sources git, one line: the replica, the active revision
(main@sha1:<commit>), whether applying is suspended, the Ready condition and its message;
then the details: the conditions with their reasons, the last fetch, the revision being
evaluated, a suspension or a pin and the revision that waits, and the last revision tried
with its errors as file:line:col (a revision whose evaluation went over the server's memory
or time budget names the limit and the file). -o json prints the whole status.

--watch prints a new line each time the status changes, until interrupted.

Exits 0 when healthy, 1 when the last fetch failed, the last attempt was refused, or the
last successful fetch is older than three poll intervals; the reason is printed.`,
		Example: `  vigocli policy status
  vigocli policy status -o json | jq '.conditions'
  vigocli policy status --watch`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			get := func() (apiv1.PolicyStatus, error) {
				var st apiv1.PolicyStatus
				err := c.do(cmd.Context(), "GET", "/api/v1/policy/status", nil, &st)
				return st, err
			}
			st, err := get()
			if err != nil {
				return err
			}
			if !watch {
				return reportStatus(g, st)
			}
			if interval <= 0 {
				return &codeError{code: 2, err: fmt.Errorf("--interval %s: must be positive", interval)}
			}
			printHeader(g.stdout)
			last := summaryLine(st)
			fmt.Fprintln(g.stdout, last)
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-cmd.Context().Done():
					return nil
				case <-t.C:
				}
				st, err := get()
				if err != nil {
					fmt.Fprintln(g.stderr, "vigocli: "+err.Error())
					continue
				}
				if line := summaryLine(st); line != last {
					fmt.Fprintln(g.stdout, line)
					last = line
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "print a line each time the status changes, until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often --watch asks the server")
	return cmd
}

func printHeader(w io.Writer) {
	fmt.Fprintf(w, "%-12s %-52s %-9s %-5s %s\n", "REPLICA", "REVISION", "SUSPENDED", "READY", "MESSAGE")
}

// summaryLine is the one-line status, as flux get prints it.
func summaryLine(st apiv1.PolicyStatus) string {
	st = oneLineAll(st)
	rev := "-"
	if a := st.Active; a != nil {
		rev = a.Name
		if rev == "" {
			rev = a.Revision
		}
	}
	ready, msg := "Unknown", ""
	for _, c := range st.Conditions {
		if c.Type == apiv1.ConditionReady {
			ready, msg = c.Status, c.Message
		}
	}
	if st.Evaluating != "" {
		msg = "evaluating " + st.Evaluating + "; " + msg
	}
	suspended := "False"
	if st.Suspended != nil {
		suspended = "True"
	}
	return fmt.Sprintf("%-12s %-52s %-9s %-5s %s", dash(st.Replica), rev, suspended, ready, msg)
}

func newPolicySyncCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "sync",
		Short: "Ask the server to fetch its policy source now and wait for the result (exit 1 when it failed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var res apiv1.PolicySyncResult
			if err := c.do(cmd.Context(), "POST", "/api/v1/policy/sync", nil, &res); err != nil {
				return err
			}
			return reportStatus(g, res.Status)
		},
	}
}

func reportStatus(g *globals, st apiv1.PolicyStatus) error {
	if g.structured() {
		if err := g.printData(st); err != nil {
			return err
		}
	} else {
		printStatus(g.stdout, st)
	}
	if !st.Healthy {
		return &codeError{code: 1}
	}
	return nil
}

func printStatus(w io.Writer, st apiv1.PolicyStatus) {
	st = oneLineAll(st) // every value from the server in one line
	printHeader(w)
	fmt.Fprintln(w, summaryLine(st))
	fmt.Fprintln(w)
	health := "healthy"
	if !st.Healthy {
		health = "UNHEALTHY: " + st.Reason
	}
	fmt.Fprintf(w, "Source:     %s\nHealth:     %s\n", st.Source, health)
	for _, c := range st.Conditions {
		line := fmt.Sprintf("  %-12s %-7s %s", c.Type, c.Status, c.Reason)
		if c.Message != "" {
			line += ": " + c.Message
		}
		fmt.Fprintf(w, "%s (since %s)\n", line, fmtTime(&c.LastTransitionTime))
	}
	if a := st.Active; a != nil {
		fmt.Fprintf(w, "Active:     %s (applied %s", orID(a.Name, a.Revision), fmtTime(&a.AppliedAt))
		if a.Signer != "" {
			fmt.Fprintf(w, ", signed by %s", a.Signer)
		}
		fmt.Fprintln(w, ")")
		if a.Subject != "" || a.Author != "" {
			fmt.Fprintf(w, "            %q by %s\n", a.Subject, dash(a.Author))
		}
	} else {
		fmt.Fprintln(w, "Active:     none: no valid policy yet; only token enrollment works")
	}
	if h := st.Suspended; h != nil {
		fmt.Fprintf(w, "Suspended:  by %s at %s: %s (vigocli policy resume applies the newest valid revision)\n", h.By, fmtTime(&h.At), h.Reason)
	}
	if h := st.Pinned; h != nil {
		fmt.Fprintf(w, "Pinned:     %s by %s at %s: %s (vigocli policy unpin returns to the branch)\n", h.Revision, h.By, fmtTime(&h.At), dash(h.Reason))
	}
	if wv := st.Waiting; wv != nil {
		fmt.Fprintf(w, "Waiting:    %s (valid, not applied)\n", orID(wv.Name, wv.Revision))
	}
	fmt.Fprintf(w, "Last fetch: %s\n", fmtTime(st.LastFetch))
	if st.FetchError != "" {
		fmt.Fprintf(w, "Fetch error: %s\n", st.FetchError)
	}
	if st.Evaluating != "" {
		fmt.Fprintf(w, "Evaluating: %s (since %s, budget %s)\n", st.Evaluating, fmtTime(st.EvaluatingSince), st.EvalLimits)
	}
	if st.NextPoll != nil {
		if d := time.Until(*st.NextPoll).Round(time.Second); d >= 0 {
			fmt.Fprintf(w, "Next poll:  %s (in %s)\n", fmtTime(st.NextPoll), d)
		} else {
			fmt.Fprintf(w, "Next poll:  %s (due)\n", fmtTime(st.NextPoll))
		}
	}
	if a := st.Attempted; a != nil {
		verdict := "valid"
		if !a.Valid {
			verdict = "INVALID, not applied"
			switch a.Kind {
			case "verify":
				verdict = "REFUSED (commit signature), not applied"
			case "budget":
				verdict = "REFUSED (evaluation over budget: " + st.EvalLimits + "), not applied"
			}
		}
		fmt.Fprintf(w, "Attempted:  %s at %s: %s\n", orID(a.Name, a.Revision), fmtTime(&a.At), verdict)
		for _, e := range a.Errors {
			pe := policy.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Message}
			fmt.Fprintf(w, "  %s\n", pe.Error())
		}
	}
}

func orID(name, id string) string {
	if name != "" {
		return name
	}
	return id
}
