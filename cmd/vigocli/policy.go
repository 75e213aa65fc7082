package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// newPolicyCmd is the "policy" command group. vet and explain work offline
// on a policy folder with the same code the server runs; status and sync ask
// the server.
func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Vet, explain, diff and edit enrollment policy (CUE files in Git); show the server's policy status",
	}
	ev := &evalFlags{}
	ev.register(cmd)
	cmd.AddCommand(newPolicyVetCmd(g, ev), printsData(newPolicyExplainCmd(g, ev)), printsData(newPolicyStatusCmd(g)), printsData(newPolicySyncCmd(g)))
	cmd.AddCommand(newPolicyDiffCmd(g, ev))
	cmd.AddCommand(newPolicyControlCmds(g)...)
	cmd.AddCommand(newPolicyEditCmds(g, ev)...)
	cmd.AddCommand(newPolicyImportCmd(g, ev), newPolicyWaitCmd(g))
	return cmd
}

func newPolicyVetCmd(g *globals, ev *evalFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "vet [DIR]",
		Short: "Validate a policy folder and run its tests (exit 0 valid, 1 invalid, 2 usage or I/O error)",
		Long: `Vet loads the policy folder DIR (default .) exactly as the server does: the same rules for
which files count (the .cue files at the top of the folder; README, docs, CI files and other
files are ignored; a .cue file in a subfolder, a symbolic link or over the size caps refuses
the policy), every .cue file unified with the #Policy schema, then the checks CUE cannot do
(host bits in CIDRs, globs, duration bounds, duplicates), evaluated in a child process within
the server's memory and time budget (--eval-memory, --eval-timeout). It then runs the
policy's tests: cases. Every problem is reported as file:line:col: path: message, with file
names as seen from the current folder.

Formats: text (default), json (an array of {file, line, col, path, message}), and github
(::error annotations, shown on the pull request by GitHub Actions).

Exit status: 0 valid, 1 invalid, 2 usage or I/O error.`,
		Example: `  vigocli policy vet examples/policy
  vigocli policy vet --format github policy/`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return &codeError{code: 2, err: fmt.Errorf("policy vet takes at most one folder, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch format {
			case "text", "json", "github":
			default:
				return &codeError{code: 2, err: fmt.Errorf("--format %s: must be text, json or github", format)}
			}
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			return vet(cmd.Context(), g, ev, dir, format)
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text, json or github")
	return cmd
}

func vet(ctx context.Context, g *globals, ev *evalFlags, dir, format string) error {
	tree, err := readTree(dir)
	if err != nil {
		return err
	}
	p, errs, err := ev.vetTree(ctx, tree, "")
	if err != nil {
		return err
	}
	out := make([]apiv1.PolicyError, len(errs))
	for i, e := range errs {
		out[i] = wireErrorIn(e, dir)
	}
	summary := ""
	if len(errs) == 0 {
		c := p.Counts()
		summary = fmt.Sprintf("policy %s is valid: %d rules (%d trusted_enrollment, %d approved, %d revocations) and %d tests checked",
			dir, c.Rules(), c.Trusted, c.Approved, c.Revocations, c.Tests)
	}
	switch format {
	case "json":
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
		if summary != "" {
			fmt.Fprintln(g.stderr, summary)
		}
	case "github":
		for _, e := range out {
			fmt.Fprintln(g.stdout, githubAnnotation(e))
		}
		if summary != "" {
			fmt.Fprintln(g.stdout, summary)
		}
	default:
		for _, e := range out {
			fmt.Fprintln(g.stdout, policy.ErrorFromWire(e).Error())
		}
		if summary != "" {
			fmt.Fprintln(g.stdout, summary)
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(g.stderr, "policy %s is invalid: %d %s\n", dir, len(errs), plural(len(errs), "problem", "problems"))
		return &codeError{code: 1}
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// githubAnnotation formats e as a GitHub Actions workflow command, escaped as
// GitHub documents (properties also escape ':' and ',').
func githubAnnotation(e apiv1.PolicyError) string {
	msg := e.Message
	if e.Path != "" {
		msg = e.Path + ": " + msg
	}
	return ghCommand("error", e.File, e.Line, e.Col, "vigocli policy vet", msg)
}

func newPolicyExplainCmd(g *globals, ev *evalFlags) *cobra.Command {
	var dir, hostname, ip, revision string
	var token, againstServer bool
	var tokenPattern string
	cmd := &cobra.Command{
		Use:   "explain --hostname H --ip A [--dir DIR | --against-server] [--token]",
		Short: "Show how a policy folder, or the server's active policy, decides a registration, without enrolling",
		Long: `Explain loads the policy folder (as vet does) and prints the decision for a registration
of --hostname from --ip: allowed or denied, the method (trusted, approved, token), the rule
that decided and the reason. --token presents a valid token bound to the hostname (or to
--token-pattern). Use -o json for {"allowed", "method", "rule", "reason", "revision"}.

--against-server asks the server instead: its active policy decides (POST
/api/v1/policy/explain, any admin token); nothing is enrolled or written to the audit
log, and no token is looked up.

Exit status: 0 when a decision was made (allowed or not), 1 when the policy is invalid,
2 on a usage or I/O error.`,
		Example: `  vigocli policy explain --dir examples/policy --hostname web7.web.example.com --ip 203.0.113.9
  vigocli policy explain --hostname laptop.example.com --ip 2001:db8::7 --token -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if hostname == "" {
				return &codeError{code: 2, err: errors.New("--hostname is required")}
			}
			var src netip.Addr
			if ip != "" {
				a, err := netip.ParseAddr(ip)
				if err != nil {
					return &codeError{code: 2, err: fmt.Errorf("--ip %q is not an IP address", ip)}
				}
				src = a
			}
			var d policy.Decision
			if againstServer {
				if cmd.Flags().Changed("dir") || revision != "" {
					return &codeError{code: 2, err: errors.New("--against-server decides with the server's active policy: --dir and --revision do not apply")}
				}
				c, err := g.client()
				if err != nil {
					return err
				}
				req := apiv1.ExplainRequest{Hostname: hostname, IP: ip, Token: token, TokenPattern: tokenPattern}
				if err := c.do(cmd.Context(), "POST", "/api/v1/policy/explain", req, &d); err != nil {
					return err
				}
			} else {
				p, errs, err := ev.loadPolicy(cmd.Context(), dir, revision)
				switch {
				case err != nil:
					return err
				case len(errs) > 0:
					fmt.Fprintln(g.stderr, errs.Error())
					return &codeError{code: 1, err: fmt.Errorf("policy %s is invalid: %d %s", dir, len(errs), plural(len(errs), "problem", "problems"))}
				}
				req := policy.Request{Hostname: hostname, SourceIP: src}
				if token || tokenPattern != "" {
					pat := tokenPattern
					if pat == "" {
						pat = hostname
					}
					req.Token = &policy.TokenInfo{ID: "explain", Pattern: pat}
				}
				d = p.Decide(req)
			}
			if g.structured() {
				return g.printData(d)
			}
			printDecision(g.stdout, d)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", ".", "policy folder")
	f.StringVar(&hostname, "hostname", "", "hostname of the registering host (required)")
	f.StringVar(&ip, "ip", "", "source address of the registration (IPv4 or IPv6)")
	f.BoolVar(&token, "token", false, "present a valid token bound to the hostname")
	f.StringVar(&tokenPattern, "token-pattern", "", "present a valid token bound to this pattern (implies --token)")
	f.StringVar(&revision, "revision", "", "revision label to report (such as a commit id)")
	f.BoolVar(&againstServer, "against-server", false, "decide with the server's active policy (admin API) instead of a folder")
	return cmd
}

func printDecision(w io.Writer, d policy.Decision) {
	verdict := "DENY"
	if d.Allowed {
		verdict = "ALLOW"
	}
	fmt.Fprintf(w, "decision: %s\nmethod:   %s\nrule:     %s\nreason:   %s\nrevision: %s\n",
		verdict, oneLine(dash(d.Method)), oneLine(dash(d.Rule)), oneLine(d.Reason), oneLine(dash(d.Revision)))
}
