package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// newPolicyControlCmds are suspend, resume, pin, unpin and history: the
// shared control of the server's policy (every replica follows it).
func newPolicyControlCmds(g *globals) []*cobra.Command {
	post := func(cmd *cobra.Command, path string, req any) error {
		c, err := g.client()
		if err != nil {
			return err
		}
		var st apiv1.PolicyStatus
		if err := c.do(cmd.Context(), "POST", path, req, &st); err != nil {
			return err
		}
		return reportStatus(g, st)
	}
	var reason string
	suspend := &cobra.Command{
		Use:   "suspend --reason R",
		Short: "Stop applying new policy revisions (they are still fetched and judged), on every replica",
		Long: `Suspend stops the server from applying new policy revisions, for a change freeze or during
an incident. New commits are still fetched and judged: the status shows the newest valid one
as waiting, and a refused one as refused. Resume applies the newest valid revision. The
suspension is shared by every replica, survives restarts, and is audited with who did it.`,
		Example: `  vigocli policy suspend --reason "change freeze until Monday (CHG-1234)"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if reason == "" {
				return &codeError{code: 2, err: fmt.Errorf("--reason is required: say why, for the audit log and the status")}
			}
			return post(cmd, "/api/v1/policy/suspend", apiv1.PolicyControlRequest{Reason: reason})
		},
	}
	suspend.Flags().StringVar(&reason, "reason", "", "why applying is suspended (required)")
	resume := &cobra.Command{
		Use:   "resume",
		Short: "Apply new policy revisions again; the newest valid one is applied at once",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return post(cmd, "/api/v1/policy/resume", nil) },
	}
	var pinReason string
	pin := &cobra.Command{
		Use:   "pin REVISION [--reason R]",
		Short: "Make an earlier applied revision active without a revert commit, and hold it",
		Long: `Pin makes REVISION — a commit the server applied before (vigocli policy history lists
them) — active at once, on every replica, for an incident rollback without a revert commit.
New commits are judged but not applied until unpin. Revocations are not undone: an envoy
revoked since stays revoked.`,
		Example: `  vigocli policy history
  vigocli policy pin 3f2a9c1e0b7d4a5f8e6c2b1a0d9f8e7c6b5a4d3c --reason "rollback of CHG-1234"`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &codeError{code: 2, err: fmt.Errorf("pin takes one revision, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return post(cmd, "/api/v1/policy/pin", apiv1.PolicyControlRequest{Revision: args[0], Reason: pinReason})
		},
	}
	pin.Flags().StringVar(&pinReason, "reason", "", "why the revision is pinned")
	unpin := &cobra.Command{
		Use:   "unpin",
		Short: "Release a pin: the branch head is judged and applied at once",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return post(cmd, "/api/v1/policy/unpin", nil) },
	}
	var limit int
	history := &cobra.Command{
		Use:   "history",
		Short: "List the policy revisions the servers applied, newest first (candidates for pin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var hs []apiv1.PolicyHistoryEntry
			if err := c.do(cmd.Context(), "GET", fmt.Sprintf("/api/v1/policy/history?limit=%d", limit), nil, &hs); err != nil {
				return err
			}
			if g.structured() {
				return g.printData(hs)
			}
			t := newTable(g.stdout, "APPLIED", "REVISION", "REPLICA", "AUTHOR", "SUBJECT")
			for _, h := range hs {
				t.row(g.age(&h.AppliedAt), orID(h.Name, h.Revision), dash(h.Replica), dash(h.Author), dash(h.Subject))
			}
			return t.flush()
		},
	}
	history.Flags().IntVar(&limit, "limit", 20, "how many revisions (at most 100)")
	cmds := []*cobra.Command{suspend, resume, pin, unpin, history}
	for _, c := range cmds {
		printsData(c)
	}
	return cmds
}
