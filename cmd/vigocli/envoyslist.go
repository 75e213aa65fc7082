package main

import (
	"bufio"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// envoySorts maps the --sort keys of envoys list to the server's orders.
var envoySorts = map[string]string{
	"hostname":  apiv1.EnvoySortHostname,
	"created":   apiv1.EnvoySortCreated,
	"last-seen": apiv1.EnvoySortSeen,
}

func newEnvoysListCmd(g *globals) *cobra.Command {
	var status, hostname, method, rule, revision, version, stale, sortBy, after string
	var limit int
	var all bool
	cmd := &cobra.Command{
		Use:   "list [--status active|revoked|all] [--hostname GLOB] [--sort KEY] [--limit N | --all]",
		Short: "List envoys: active ones by hostname, a page at a time",
		Long: `List prints the envoys that match every filter given, sorted by hostname (--sort created
or last-seen for another order; a leading '-', as in --sort=-last-seen, reverses it).

Revoked envoys are hidden: --status revoked shows only them, --status all every envoy.
--stale 1h shows the envoys not seen for an hour (their last check-in, or their enrollment
when they never checked in).

A table shows at most --limit envoys (default 100). When more match, a notice on stderr
gives the command for the next page (--after CURSOR); --all prints every match. -o json and
-o yaml print every match unless --limit is given: a script reading them gets the fleet.

-o wide adds the agent version, the platform, the enrollment time and the certificate's
expiry; -o json and -o yaml print the envoys as the API answers them.`,
		Example: `  vigocli envoys list
  vigocli envoys list -o wide --hostname '*.web.example.com'
  vigocli envoys list --stale 1h --sort=-last-seen
  vigocli envoys list --status all --method token --version 1.4.0 --all -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			usage := func(format string, a ...any) error {
				return &codeError{code: 2, err: fmt.Errorf(format, a...)}
			}
			switch status {
			case "active", "revoked", "all":
			default:
				return usage("--status %s: must be active, revoked or all", status)
			}
			key, desc := strings.CutPrefix(sortBy, "-")
			sort, ok := envoySorts[key]
			if !ok {
				return usage("--sort %s: must be hostname, created or last-seen (a leading '-' reverses the order)", sortBy)
			}
			if stale != "" {
				if d, err := time.ParseDuration(stale); err != nil || d <= 0 {
					return usage("--stale %s: must be a positive duration, such as 30m or 24h", stale)
				}
			}
			if limit < 1 && !all {
				return usage("--limit %d: must be at least 1 (--all prints every envoy)", limit)
			}
			if all && cmd.Flags().Changed("limit") {
				return usage("--all and --limit are exclusive")
			}
			if g.structured() && !cmd.Flags().Changed("limit") {
				all = true // a document is the whole list unless asked
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"status": status, "hostname": hostname, "method": method, "rule": rule,
				"revision": revision, "version": version, "stale": stale, "sort": sort, "after": after} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if desc {
				q.Set("desc", "true")
			}
			if !all {
				q.Set("limit", strconv.Itoa(limit+1)) // one more tells whether there are more
			}
			var out []apiv1.Envoy
			if err := c.do(cmd.Context(), "GET", "/api/v1/envoys?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			more := !all && len(out) > limit
			if more {
				out = out[:limit]
			}
			if err := printEnvoys(g, out); err != nil {
				return err
			}
			if more {
				next := []string{"vigocli", "envoys", "list"}
				next = append(next, changedFlags(cmd, "after")...)
				next = append(next, "--after", out[len(out)-1].Cursor(sort))
				fmt.Fprintf(g.stderr, "more envoys match: the next page is\n  %s\n(or --all for every envoy)\n", strings.Join(next, " "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&status, "status", "active", "active, revoked or all")
	f.StringVar(&hostname, "hostname", "", "only hostnames matching this glob (such as '*.web.example.com')")
	f.StringVar(&method, "method", "", "only envoys enrolled by this method: trusted, approved or token")
	f.StringVar(&rule, "rule", "", "only envoys enrolled by this rule (as shown in the RULE column)")
	f.StringVar(&revision, "revision", "", "only envoys enrolled under this policy revision (the full id)")
	f.StringVar(&version, "version", "", "only envoys whose agent runs this version")
	f.StringVar(&stale, "stale", "", "only envoys not seen for this long (such as 1h)")
	f.StringVar(&sortBy, "sort", "hostname", "order: hostname, created or last-seen; a leading '-' reverses it")
	f.IntVar(&limit, "limit", 100, "print at most this many envoys (default: all with -o json or yaml)")
	f.BoolVar(&all, "all", false, "print every matching envoy")
	f.StringVar(&after, "after", "", "start after this position (given by the notice of the previous page)")
	_ = cmd.RegisterFlagCompletionFunc("status", cobra.FixedCompletions([]string{"active", "revoked", "all"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("method", cobra.FixedCompletions([]string{"trusted", "approved", "token"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("sort", cobra.FixedCompletions([]string{"hostname", "created", "last-seen", "-hostname", "-created", "-last-seen"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// changedFlags repeats the flags given to cmd (but skip, and never
// --admin-token: a secret), quoted for a shell, to print the command of a
// next page.
func changedFlags(cmd *cobra.Command, skip ...string) []string {
	var out []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Name == "admin-token" || slices.Contains(skip, f.Name) {
			return
		}
		vals := []string{f.Value.String()}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			vals = sv.GetSlice()
		}
		for _, v := range vals {
			out = append(out, "--"+f.Name+"="+shellQuote(v))
		}
	})
	return out
}

func printEnvoys(g *globals, es []apiv1.Envoy) error {
	if g.structured() {
		if es == nil {
			es = []apiv1.Envoy{}
		}
		return g.printData(es)
	}
	head := []string{"UUID", "HOSTNAME", "STATUS", "METHOD", "RULE", "POLICY", "SOURCE", "LAST SEEN"}
	if g.wide() {
		head = append(head, "VERSION", "OS/ARCH", "ENROLLED", "CERT EXPIRES", "LAST ADDRESS")
	}
	t := newTable(g.stdout, head...)
	for _, e := range es {
		row := []string{e.UUID, e.Hostname, e.Status, e.Method, e.Rule, short(e.PolicyRevision), e.SourceIP, g.age(e.LastSeen)}
		if e.LastSeen == nil {
			row[len(row)-1] = "never"
		}
		if g.wide() {
			row = append(row, dash(e.AgentVersion), e.OS+"/"+e.Arch, g.age(&e.CreatedAt), g.age(&e.CertNotAfter), dash(e.LastAddr))
		}
		t.row(row...)
	}
	return t.flush()
}

func newEnvoysRevokeCmd(g *globals) *cobra.Command {
	var reason string
	var dryRun, yes bool
	cmd := &cobra.Command{
		Use:   "revoke UUID|HOSTNAME --reason TEXT [--dry-run] [--yes]",
		Short: "Revoke an envoy now (for a lasting revocation, add it to the policy repository)",
		Long: `Revoke revokes the envoy at once: its certificate is refused at its next connection and
the revocation is recorded in the audit log with --reason. HOSTNAME names the active envoy
with that hostname.

--dry-run prints the envoy that would be revoked and changes nothing.

When stdin is a terminal, revoke shows the envoy and asks for confirmation; --yes skips the
question. When stdin is not a terminal (a script, a pipe, CI) nothing is asked, so that
scripts keep working as they are.`,
		Example: `  vigocli envoys revoke web7.example.com --reason "decommissioned" --dry-run
  vigocli envoys revoke 0b5c2d9e-7f1a-4c3b-9e8d-6a5f4e3d2c1b --reason "key leaked" --yes`,
		Args: exactArgs(1, "the UUID or hostname of the envoy"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return &codeError{code: 2, err: errors.New("--reason is required: it is recorded in the audit log")}
			}
			ask := !yes && !dryRun && g.stdinTerminal()
			if !dryRun && !ask {
				return envoyAction(cmd, g, args[0], "revoke", apiv1.EnvoyRevokeRequest{Reason: reason}, "revoked")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var e apiv1.Envoy
			if err := c.do(cmd.Context(), "GET", "/api/v1/envoys/"+url.PathEscape(args[0]), nil, &e); err != nil {
				return err
			}
			if e.Status != "active" {
				return &codeError{code: 1, err: fmt.Errorf("envoy %s (%s) is %s already: nothing to revoke", oneLine(e.UUID), oneLine(e.Hostname), oneLine(e.Status))}
			}
			what := fmt.Sprintf("envoy %s (%s, enrolled %s by %s, last seen %s)", oneLine(e.UUID), oneLine(e.Hostname),
				g.age(&e.CreatedAt), oneLine(dash(e.Method)), g.age(e.LastSeen))
			if dryRun {
				if g.structured() {
					return g.printData(e)
				}
				fmt.Fprintf(g.stdout, "would revoke %s with reason %q (dry run: nothing was changed)\n", what, reason)
				return nil
			}
			fmt.Fprintf(g.stderr, "Revoke %s with reason %q? [y/N] ", what, reason)
			line, _ := bufio.NewReader(g.stdin).ReadString('\n')
			switch strings.ToLower(strings.TrimSpace(line)) {
			case "y", "yes":
			default:
				return &codeError{code: 1, err: errors.New("not revoked: not confirmed")}
			}
			// By UUID: the envoy that was shown, even if the hostname has
			// been enrolled again since.
			return envoyAction(cmd, g, e.UUID, "revoke", apiv1.EnvoyRevokeRequest{Reason: reason}, "revoked")
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log; required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the envoy that would be revoked and change nothing")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation on a terminal")
	return cmd
}
