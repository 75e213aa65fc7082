package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// auditPage is the most events one request asks for (the server's cap).
const auditPage = 5000

func newAuditCmd(g *globals) *cobra.Command {
	var since, before, hostname, actor string
	var kinds []string
	var limit int
	var follow bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "audit [--limit N] [--kind K] [--hostname H] [--actor NAME] [--since 24h|RFC3339] [--follow]",
		Short: "Show the audit trail, newest first: registrations (allowed and denied), tokens, revocations, policy changes",
		Long: `Audit prints the newest events of the audit log first, at most --limit of them (default
100). When older events match, a notice on stderr gives the command for the next page
(--before CURSOR); --limit 0 prints every match.

Filters: --kind (an event type such as registration, envoy.revoked, token.created,
policy.applied; repeat it or separate kinds with commas), --hostname, --actor (the name of
the admin token that acted; "admin" is the server's own), --since (a duration back from
now, such as 1h, or an RFC 3339 time).

--follow prints the newest events oldest first, then each new event as it is recorded,
polling every --interval, until interrupted (Ctrl-C ends it with exit status 0). With -o
json it prints one JSON object a line.`,
		Example: `  vigocli audit
  vigocli audit --kind registration --since 1h
  vigocli audit --hostname web7.example.com -o json
  vigocli audit --follow --kind envoy.revoked`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return &codeError{code: 2, err: fmt.Errorf("--limit %d: must be 0 (all) or more", limit)}
			}
			if follow && before != "" {
				return &codeError{code: 2, err: errors.New("--follow and --before are exclusive: --follow shows the newest events")}
			}
			if interval <= 0 {
				return &codeError{code: 2, err: fmt.Errorf("--interval %s: must be positive", interval)}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			q := url.Values{"order": {"newest"}}
			for k, v := range map[string]string{"since": since, "hostname": hostname, "actor": actor} {
				if v != "" {
					q.Set(k, v)
				}
			}
			for _, k := range kinds {
				for _, k := range strings.Split(k, ",") {
					if k = strings.TrimSpace(k); k != "" {
						q.Add("type", k)
					}
				}
			}
			ctx := cmd.Context()
			// Pages of the newest events until limit (plus one, which tells
			// whether there are more) or the end.
			var evs []apiv1.AuditEvent
			cursor := before
			for {
				want := auditPage
				if limit > 0 {
					want = min(auditPage, limit+1-len(evs))
				}
				pq := cloneValues(q)
				pq.Set("limit", strconv.Itoa(want))
				if cursor != "" {
					pq.Set("before", cursor)
				}
				var page []apiv1.AuditEvent
				if err := c.do(ctx, "GET", "/api/v1/audit?"+pq.Encode(), nil, &page); err != nil {
					return err
				}
				evs = append(evs, page...)
				if len(page) < want || (limit > 0 && len(evs) > limit) {
					break
				}
				cursor = page[len(page)-1].Cursor()
			}
			more := limit > 0 && len(evs) > limit
			if more {
				evs = evs[:limit]
			}
			if !follow {
				if err := printAudit(g, evs); err != nil {
					return err
				}
				if more {
					next := append([]string{"vigocli", "audit"}, changedFlags(cmd, "before")...)
					next = append(next, "--before", evs[len(evs)-1].Cursor())
					fmt.Fprintf(g.stderr, "more events match: the next page is\n  %s\n(or --limit 0 for every event)\n", strings.Join(next, " "))
				}
				return nil
			}
			return followAudit(ctx, g, c, q, evs, interval)
		},
	}
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 100, "print at most this many events, the newest (0 = all)")
	f.StringVar(&before, "before", "", "only events older than this position (given by the notice of the previous page)")
	f.StringSliceVar(&kinds, "kind", nil, "only events of this type (repeat, or separate with commas)")
	f.StringVar(&hostname, "hostname", "", "only events about this hostname")
	f.StringVar(&actor, "actor", "", `only events done by this admin token ("admin": the server's own)`)
	f.StringVar(&since, "since", "", "only events since a duration ago (1h) or an RFC 3339 time")
	f.BoolVarP(&follow, "follow", "f", false, "print new events as they are recorded, until interrupted")
	f.DurationVar(&interval, "interval", 2*time.Second, "with --follow, how often to ask the server")
	return printsData(cmd)
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// followAudit prints evs (newest first) oldest first, then polls for the
// events newer than the newest printed until ctx ends.
func followAudit(ctx context.Context, g *globals, c *client, q url.Values, evs []apiv1.AuditEvent, interval time.Duration) error {
	slices.Reverse(evs)
	var t *table
	if !g.structured() {
		t = newTable(g.stdout, auditHeader...)
	}
	show := func(evs []apiv1.AuditEvent) error {
		for _, e := range evs {
			switch g.output {
			case "json":
				b, err := json.Marshal(e)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "%s\n", b)
			case "yaml":
				fmt.Fprintln(g.stdout, "---")
				if err := g.printData(e); err != nil {
					return err
				}
			default:
				t.row(auditRow(g, e)...)
			}
		}
		if t != nil {
			return t.flush()
		}
		return nil
	}
	if err := show(evs); err != nil {
		return err
	}
	cursor := ""
	if len(evs) > 0 {
		cursor = evs[len(evs)-1].Cursor()
	}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		pq := cloneValues(q)
		pq.Set("limit", strconv.Itoa(auditPage))
		if cursor != "" {
			// Only what is newer than the newest event shown. (Without a
			// cursor nothing matched before: whatever matches now is new.)
			pq.Set("after", cursor)
		}
		var page []apiv1.AuditEvent
		if err := c.do(ctx, "GET", "/api/v1/audit?"+pq.Encode(), nil, &page); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(page) == auditPage {
			fmt.Fprintf(g.stderr, "vigocli: more than %d events since the last poll: only the newest %d are shown\n", auditPage, auditPage)
		}
		slices.Reverse(page)
		if err := show(page); err != nil {
			return err
		}
		if len(page) > 0 {
			cursor = page[len(page)-1].Cursor()
		}
		timer.Reset(interval)
	}
}

var auditHeader = []string{"TIME", "EVENT", "RESULT", "ACTOR", "HOSTNAME", "SOURCE", "METHOD", "RULE", "POLICY", "TOKEN", "ENVOY", "REASON"}

func auditRow(g *globals, e apiv1.AuditEvent) []string {
	return []string{g.age(&e.At), e.Type, dash(e.Result), dash(e.Actor), dash(e.Hostname), dash(e.SourceIP), dash(e.Method), dash(e.Rule),
		dash(short(e.Revision)), dash(e.TokenID), dash(e.EnvoyUUID), dash(e.Reason)}
}

func printAudit(g *globals, evs []apiv1.AuditEvent) error {
	if g.structured() {
		if evs == nil {
			evs = []apiv1.AuditEvent{}
		}
		return g.printData(evs)
	}
	t := newTable(g.stdout, auditHeader...)
	for _, e := range evs {
		t.row(auditRow(g, e)...)
	}
	return t.flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
