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
	return &cobra.Command{
		Use:   "status",
		Short: "Show the server's active policy revision and its last attempt (exit 1 when unhealthy)",
		Long: `Shows which policy revision the server applies, when it last fetched its source, and the
last revision it tried, with its errors as file:line:col (a revision whose evaluation went
over the server's memory or time budget names the limit and the file). Exits 0 when healthy,
1 when the last fetch failed, the last attempt was refused, or the last successful fetch is
older than three poll intervals; the reason is printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var st apiv1.PolicyStatus
			if err := c.do(cmd.Context(), "GET", "/api/v1/policy/status", nil, &st); err != nil {
				return err
			}
			return reportStatus(g, st)
		},
	}
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
	if g.output == "json" {
		if err := g.printJSON(st); err != nil {
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
	health := "healthy"
	if !st.Healthy {
		health = "UNHEALTHY: " + st.Reason
	}
	fmt.Fprintf(w, "Replica:    %s\nSource:     %s\nHealth:     %s\n", dash(st.Replica), st.Source, health)
	if st.Active != nil {
		fmt.Fprintf(w, "Active:     %s (applied %s", st.Active.Revision, fmtTime(&st.Active.AppliedAt))
		if st.Active.Signer != "" {
			fmt.Fprintf(w, ", signed by %s", st.Active.Signer)
		}
		fmt.Fprintln(w, ")")
	} else {
		fmt.Fprintln(w, "Active:     none: no valid policy yet; only token enrollment works")
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
		fmt.Fprintf(w, "Attempted:  %s at %s: %s\n", a.Revision, fmtTime(&a.At), verdict)
		for _, e := range a.Errors {
			pe := policy.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Message}
			fmt.Fprintf(w, "  %s\n", pe.Error())
		}
	}
}
