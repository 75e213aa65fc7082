package main

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

func newAuditCmd(g *globals) *cobra.Command {
	var since string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit [--since 24h|RFC3339] [--limit N]",
		Short: "Show the audit trail: registrations (allowed and denied), tokens, revocations, policy changes",
		Example: `  vigocli audit --since 1h
  vigocli audit --since 2026-11-01T00:00:00Z -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			if since != "" {
				q.Set("since", since)
			}
			q.Set("limit", fmt.Sprint(limit))
			var out []apiv1.AuditEvent
			if err := c.do(cmd.Context(), "GET", "/api/v1/audit?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return g.printJSON(out)
			}
			t := newTable(g.stdout, "TIME", "EVENT", "RESULT", "ACTOR", "HOSTNAME", "SOURCE", "METHOD", "RULE", "POLICY", "TOKEN", "ENVOY", "REASON")
			for _, e := range out {
				t.row(fmtTime(&e.At), e.Type, dash(e.Result), dash(e.Actor), dash(e.Hostname), dash(e.SourceIP), dash(e.Method), dash(e.Rule),
					dash(short(e.Revision)), dash(e.TokenID), dash(e.EnvoyUUID), dash(e.Reason))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&since, "since", "24h", "events since a duration ago (1h) or an RFC 3339 time")
	cmd.Flags().IntVar(&limit, "limit", 1000, "at most this many events (0 = all)")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
