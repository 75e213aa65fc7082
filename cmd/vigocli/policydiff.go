package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// maxEnvoysFile bounds the --envoys file (about a million envoys).
const maxEnvoysFile = 512 << 20

func newPolicyDiffCmd(g *globals, ev *evalFlags) *cobra.Command {
	var (
		envoysFile    string
		serverEnvoys  bool
		againstServer bool
		base          string
		replay        string
		replayLimit   int
		format        string
		failOnRevoke  bool
	)
	cmd := &cobra.Command{
		Use:   "diff OLD_DIR NEW_DIR | --against-server [NEW_DIR] | --base REV [NEW_DIR]",
		Short: "Show what a policy change does before it is merged: rules changed, envoys revoked, tests and past registrations decided differently",
		Long: `Diff loads two policy folders (as vet does) and shows the change from OLD to NEW:

  - trusted_enrollment entries added, removed or changed (matched by name, else by pattern,
    so a renamed entry shows as a change; CIDRs added and removed), approved patterns,
    revocations (matched by uuid, else hostname), cert_validity and tokens.max_ttl;
  - the decisions of the policies' own tests (those of NEW and of OLD) that change;
  - with --envoys FILE (a JSON array of envoys, as saved by "vigocli envoys list -o json")
    or --server-envoys (the active envoys, fetched from the server's admin API): the active
    envoys that NEW's revocations revoke (by uuid or hostname), and the envoys that NEW would
    not admit again by rule (their hostname and source address decided without a token),
    while OLD would or while their recorded rule is gone. The latter is information only:
    removing a rule revokes nobody; existing envoys keep their certificates;
  - with --replay 7d: the registration attempts of that period, read from the server's
    audit log (hostname, source address, token or not), decided again by NEW: the past
    enrollments NEW would refuse and the past refusals NEW would admit, with counts and
    the first names. An attempt admitted by a token is replayed with a valid token; a
    refused one without (whether its token was valid is not a question of policy).
    Differences that OLD already makes are marked. The newest --replay-limit attempts are
    read, newest first.

OLD is either a folder (OLD_DIR NEW_DIR), or a revision of the Git checkout that holds
NEW_DIR (default .): --base REV, or --against-server, which takes the revision the server
applies (its active revision; the checkout must have it: git fetch) and also computes the
impact on the server's active envoys. The policy folder of that revision is the one at
NEW_DIR's place in the repository.

In CI, on a pull request (the checkout has the base branch's history):

  vigocli policy diff --against-server policy --replay 7d --format github

Formats: text (default); json, one object {added, removed, changed, envoys_checked,
revokes, no_longer_admitted, test_changes, replay} (revokes and no_longer_admitted are null
when no envoys were given, replay when not asked for); github, ::warning annotations for
the envoys the change revokes and the past enrollments it would refuse, ::notice
annotations for the rest, followed by the text report; markdown, a pull-request comment:
its first line is the marker <!-- vigocli policy diff --> (by which CI finds the comment
to update in place), then a summary and the text report.

Exit status: 0 when both policies load (a diff is information); 1 when NEW is invalid (its
problems are printed as vet prints them); 2 on a usage or I/O error, or when OLD is invalid;
3 with --fail-on-revoke when the change revokes at least one active envoy, to make a CI
job require an explicit approval.`,
		Example: `  vigocli policy diff ../base/policy policy --envoys envoys.json
  vigocli policy diff --against-server policy --replay 7d --fail-on-revoke
  vigocli policy diff --base origin/main . --format json
  vigocli envoys list --status active -o json > envoys.json`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case againstServer && base != "":
				return &codeError{code: 2, err: errors.New("--against-server and --base are exclusive: --against-server takes the server's active revision as the base")}
			case (againstServer || base != "") && len(args) > 1:
				return &codeError{code: 2, err: fmt.Errorf("with --against-server or --base, policy diff takes at most one folder, NEW_DIR; got %d arguments", len(args))}
			case !againstServer && base == "" && len(args) != 2:
				return &codeError{code: 2, err: fmt.Errorf("policy diff takes two folders, OLD_DIR and NEW_DIR (or --against-server or --base REV and NEW_DIR); got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			switch format {
			case "text", "json", "github", "markdown":
			default:
				return &codeError{code: 2, err: fmt.Errorf("--format %s: must be text, json, github or markdown", format)}
			}
			if envoysFile != "" && (serverEnvoys || againstServer) {
				return &codeError{code: 2, err: errors.New("--envoys and --server-envoys (or --against-server) are exclusive")}
			}
			serverEnvoys = serverEnvoys || againstServer
			if failOnRevoke && envoysFile == "" && !serverEnvoys {
				return &codeError{code: 2, err: errors.New("--fail-on-revoke needs the envoys: pass --envoys FILE, --server-envoys or --against-server")}
			}
			var replayFor time.Duration
			if replay != "" {
				d, err := parseDays(replay)
				if err != nil || d <= 0 {
					return &codeError{code: 2, err: fmt.Errorf("--replay %q: write a period such as 7d, 36h or 90m", replay)}
				}
				replayFor = d
			}
			if replayLimit <= 0 {
				return &codeError{code: 2, err: errors.New("--replay-limit must be positive")}
			}

			// OLD: a folder, or a revision of NEW's checkout.
			var oldDir, oldName, newDir string
			switch {
			case againstServer || base != "":
				newDir = "."
				if len(args) == 1 {
					newDir = args[0]
				}
				rev, what := base, "revision "+base
				if againstServer {
					c, err := g.client()
					if err != nil {
						return err
					}
					var st apiv1.PolicyStatus
					if err := c.do(ctx, "GET", "/api/v1/policy/status", nil, &st); err != nil {
						return fmt.Errorf("read the server's active revision: %w", err)
					}
					if st.Active == nil {
						return &codeError{code: 2, err: errors.New("the server has no active policy revision to compare with: pass OLD_DIR or --base REV")}
					}
					rev, what = st.Active.Revision, "the server's active revision "+st.Active.Revision
				}
				dir, cleanup, err := checkoutRevision(ctx, newDir, rev, what)
				if err != nil {
					return err
				}
				defer cleanup()
				oldDir, oldName = dir, rev
				if len(oldName) > 12 && isHex(oldName) {
					oldName = oldName[:12]
				}
				oldName += ":" + filepath.ToSlash(filepath.Clean(newDir))
			default:
				oldDir, newDir = args[0], args[1]
				oldName = oldDir
			}

			oldP, errs, err := ev.loadPolicy(ctx, oldDir, oldName)
			if err != nil {
				return err
			}
			if len(errs) > 0 {
				return &codeError{code: 2, err: fmt.Errorf("old policy %s is invalid (%d %s), so there is nothing to compare with:\n%s",
					oldName, len(errs), plural(len(errs), "problem", "problems"), prefixErrors(errs, oldName))}
			}
			newP, errs, err := ev.loadPolicy(ctx, newDir, newDir)
			if err != nil {
				return err
			}
			if len(errs) > 0 {
				if format == "github" {
					for _, e := range errs {
						fmt.Fprintln(g.stdout, githubAnnotation(wireErrorIn(e, newDir)))
					}
				} else {
					fmt.Fprintln(g.stderr, prefixErrors(errs, newDir))
				}
				return &codeError{code: 1, err: fmt.Errorf("new policy %s is invalid: %d %s", newDir, len(errs), plural(len(errs), "problem", "problems"))}
			}

			var envoys []apiv1.Envoy
			switch {
			case envoysFile != "":
				if envoys, err = readEnvoys(envoysFile); err != nil {
					return &codeError{code: 2, err: err}
				}
			case serverEnvoys:
				if envoys, err = fetchActiveEnvoys(ctx, g); err != nil {
					return err
				}
			}

			c := policy.Diff(oldP, newP)
			r := diffReport{Added: c.Added, Removed: c.Removed, Changed: c.Changed, TestChanges: c.TestChanges}
			for i, tc := range r.TestChanges {
				dir := newDir
				if tc.In == "old" {
					dir = oldName
				}
				r.TestChanges[i].File = fileIn(dir, tc.File)
			}
			if envoys != nil || envoysFile != "" || serverEnvoys {
				refs := envoyRefs(envoys)
				im := c.Impact(refs)
				n := len(refs)
				r.Envoys = &n
				r.Revokes = nonNil(im.Revokes)
				r.NoLongerAdmitted = nonNil(im.NoLongerAdmitted)
			}
			r.TestChanges = nonNil(r.TestChanges)
			if replayFor > 0 {
				rp, err := replayAudit(ctx, g, oldP, newP, replayFor, replayLimit)
				if err != nil {
					return err
				}
				rp.Period = replay
				r.Replay = rp
			}

			switch format {
			case "json":
				if err := g.printJSON(r); err != nil {
					return err
				}
			case "github":
				printDiffGitHub(g.stdout, r)
				printDiffText(g.stdout, r, oldName, newDir)
			case "markdown":
				oldDesc := "`" + oldName + "`"
				if againstServer {
					oldDesc += ", the revision the server applies"
				}
				printDiffMarkdown(g.stdout, r, oldName, oldDesc, newDir, g.ownBuild().Version)
			default:
				printDiffText(g.stdout, r, oldName, newDir)
			}
			if n := r.newRevokes(); failOnRevoke && n > 0 {
				return &codeError{code: 3, err: fmt.Errorf("the change revokes %d active %s (--fail-on-revoke): it needs an explicit approval",
					n, plural(n, "envoy", "envoys"))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&envoysFile, "envoys", "", "JSON file of envoys (from vigocli envoys list -o json) to compute the impact on")
	f.BoolVar(&serverEnvoys, "server-envoys", false, "fetch the active envoys from the server (admin API) to compute the impact on")
	f.BoolVar(&againstServer, "against-server", false, "compare with the revision the server applies (from the checkout of NEW_DIR), and compute the impact on its active envoys")
	f.StringVar(&base, "base", "", "compare with this revision of the checkout of NEW_DIR (a commit, branch or tag)")
	f.StringVar(&replay, "replay", "", "replay the registration attempts of this period (7d, 36h) from the server's audit log against NEW")
	f.IntVar(&replayLimit, "replay-limit", 100000, "replay at most this many attempts (the newest)")
	f.StringVar(&format, "format", "text", "output format: text, json, github or markdown")
	f.BoolVar(&failOnRevoke, "fail-on-revoke", false, "exit 3 when the change revokes at least one active envoy")
	return cmd
}

// diffReport is what diff prints; -format json prints it as it is.
type diffReport struct {
	Added            policy.Entries      `json:"added"`
	Removed          policy.Entries      `json:"removed"`
	Changed          policy.Changed      `json:"changed"`
	Envoys           *int                `json:"envoys_checked,omitempty"`
	Revokes          []policy.Revoke     `json:"revokes"`
	NoLongerAdmitted []policy.Unadmitted `json:"no_longer_admitted"`
	TestChanges      []policy.TestChange `json:"test_changes"`
	Replay           *replayReport       `json:"replay,omitempty"`
}

// newRevokes counts the envoys that the change revokes and the old policy
// did not already revoke.
func (r diffReport) newRevokes() int {
	n := 0
	for _, rv := range r.Revokes {
		if !rv.InOld {
			n++
		}
	}
	return n
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// readEnvoys reads a JSON array of envoys.
func readEnvoys(file string) ([]apiv1.Envoy, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read envoys: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxEnvoysFile+1))
	if err != nil {
		return nil, fmt.Errorf("read envoys %s: %w", file, err)
	}
	if len(data) > maxEnvoysFile {
		return nil, fmt.Errorf("read envoys %s: larger than %d MiB", file, maxEnvoysFile>>20)
	}
	envoys := []apiv1.Envoy{}
	if err := json.Unmarshal(data, &envoys); err != nil {
		return nil, fmt.Errorf("read envoys %s: not a JSON array of envoys (vigocli envoys list -o json): %w", file, err)
	}
	return envoys, nil
}

// fetchActiveEnvoys asks the server for its active envoys.
func fetchActiveEnvoys(ctx context.Context, g *globals) ([]apiv1.Envoy, error) {
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	envoys := []apiv1.Envoy{}
	if err := c.do(ctx, "GET", "/api/v1/envoys?status=active", nil, &envoys); err != nil {
		return nil, fmt.Errorf("fetch active envoys: %w", err)
	}
	return envoys, nil
}

// envoyRefs keeps the active envoys (an empty status counts as active) in
// the form policy.Impact takes.
func envoyRefs(envoys []apiv1.Envoy) []policy.EnvoyRef {
	refs := []policy.EnvoyRef{}
	for _, e := range envoys {
		if e.Status != "" && e.Status != "active" {
			continue
		}
		ip, err := netip.ParseAddr(e.SourceIP)
		if err != nil {
			if ap, err := netip.ParseAddrPort(e.SourceIP); err == nil {
				ip = ap.Addr()
			}
		}
		refs = append(refs, policy.EnvoyRef{UUID: e.UUID, Hostname: e.Hostname, SourceIP: ip, Rule: e.Rule})
	}
	return refs
}

// fileIn names a policy file from the current folder, so that editors and
// GitHub (which runs from the repository root) find it.
func fileIn(dir, file string) string {
	if file == "" || filepath.Clean(dir) == "." {
		return file
	}
	return filepath.ToSlash(filepath.Join(dir, file))
}

// wireErrorIn is e as the API carries it, its file named from the current
// folder.
func wireErrorIn(e *policy.Error, dir string) apiv1.PolicyError {
	w := e.Wire()
	w.File = fileIn(dir, w.File)
	return w
}

// prefixErrors prints errs one a line, files named from the current folder.
func prefixErrors(errs policy.Errors, dir string) string {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = policy.ErrorFromWire(wireErrorIn(e, dir)).Error()
	}
	return strings.Join(lines, "\n")
}

func printDiffText(w io.Writer, r diffReport, oldDir, newDir string) {
	nAdd, nRem, nChg := r.Added.Len(), r.Removed.Len(), r.Changed.Len()
	if nAdd+nRem+nChg == 0 {
		fmt.Fprintf(w, "policy diff %s -> %s: no rule or setting changes\n", oldDir, newDir)
	} else {
		fmt.Fprintf(w, "policy diff %s -> %s: %d added, %d removed, %d changed\n", oldDir, newDir, nAdd, nRem, nChg)
	}

	var trusted, approved, revocations, settings []string
	for _, t := range r.Added.Trusted {
		trusted = append(trusted, "+ "+trustedText(t))
	}
	for _, t := range r.Removed.Trusted {
		trusted = append(trusted, "- "+trustedText(t))
	}
	for _, c := range r.Changed.Trusted {
		trusted = append(trusted, "~ "+c.Old.Label()+": "+trustedChangeText(c))
	}
	for _, a := range r.Added.Approved {
		approved = append(approved, "+ "+a)
	}
	for _, a := range r.Removed.Approved {
		approved = append(approved, "- "+a)
	}
	for _, rv := range r.Added.Revocations {
		revocations = append(revocations, "+ "+rv.Label()+": "+rv.Reason)
	}
	for _, rv := range r.Removed.Revocations {
		revocations = append(revocations, "- "+rv.Label()+": "+rv.Reason)
	}
	for _, c := range r.Changed.Revocations {
		var parts []string
		if c.Old.UUID != c.New.UUID {
			parts = append(parts, fmt.Sprintf("uuid %s -> %s", dash(c.Old.UUID), dash(c.New.UUID)))
		}
		if c.Old.Hostname != c.New.Hostname {
			parts = append(parts, fmt.Sprintf("hostname %s -> %s", dash(c.Old.Hostname), dash(c.New.Hostname)))
		}
		if c.Old.Reason != c.New.Reason {
			parts = append(parts, fmt.Sprintf("reason %q -> %q", c.Old.Reason, c.New.Reason))
		}
		revocations = append(revocations, "~ "+c.Old.Label()+": "+strings.Join(parts, "; "))
	}
	for _, s := range r.Changed.Settings {
		settings = append(settings, fmt.Sprintf("~ %s: %s -> %s", s.Setting, s.Old, s.New))
	}
	section := func(title string, lines []string) {
		if len(lines) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, l := range lines {
			fmt.Fprintln(w, "  "+l)
		}
	}
	section("trusted_enrollment", trusted)
	section("approved", approved)
	section("revocations", revocations)
	section("settings", settings)

	fmt.Fprintln(w)
	if r.Envoys == nil {
		fmt.Fprintln(w, "impact on envoys: not computed (pass --envoys FILE or --server-envoys)")
	} else {
		n := r.newRevokes()
		lagging := ""
		if k := len(r.Revokes) - n; k > 0 {
			lagging = fmt.Sprintf(", %d already revoked by OLD", k)
		}
		fmt.Fprintf(w, "impact on %d active %s: %d revoked, %d would not be admitted again%s\n",
			*r.Envoys, plural(*r.Envoys, "envoy", "envoys"), n, len(r.NoLongerAdmitted), lagging)
		for _, rv := range r.Revokes {
			if rv.InOld {
				fmt.Fprintf(w, "  already revoked by OLD (the server has not applied OLD yet): %s\n", revokeText(rv))
			} else {
				fmt.Fprintf(w, "  revoked: %s\n", revokeText(rv))
			}
		}
		for _, u := range r.NoLongerAdmitted {
			fmt.Fprintf(w, "  would not be admitted again (stays enrolled): %s\n", unadmittedText(u))
		}
	}
	fmt.Fprintln(w)
	if len(r.TestChanges) == 0 {
		fmt.Fprintln(w, "test decisions: no change")
	} else {
		fmt.Fprintf(w, "test decisions that change: %d\n", len(r.TestChanges))
		for _, tc := range r.TestChanges {
			fmt.Fprintf(w, "  %s: %s\n", position(tc.File, tc.Line, tc.Col), testChangeText(tc))
		}
	}
	if r.Replay != nil {
		fmt.Fprintln(w)
		replayText(w, r.Replay)
	}
}

func trustedText(t policy.TrustedEntry) string {
	s := "pattern " + t.Pattern
	if t.Name != "" {
		s = fmt.Sprintf("%q %s", t.Name, s)
	}
	return s + ", cidrs " + prefixes(t.CIDRs)
}

func trustedChangeText(c policy.TrustedChange) string {
	var parts []string
	switch {
	case c.Old.Name == c.New.Name:
	case c.New.Name == "":
		parts = append(parts, "name removed")
	case c.Old.Name == "":
		parts = append(parts, fmt.Sprintf("named %q", c.New.Name))
	default:
		parts = append(parts, fmt.Sprintf("renamed to %q", c.New.Name))
	}
	if c.Old.Pattern != c.New.Pattern {
		parts = append(parts, fmt.Sprintf("pattern %s -> %s", c.Old.Pattern, c.New.Pattern))
	}
	if len(c.CIDRsAdded)+len(c.CIDRsRemoved) > 0 {
		var cs []string
		for _, p := range c.CIDRsAdded {
			cs = append(cs, "+"+p.String())
		}
		for _, p := range c.CIDRsRemoved {
			cs = append(cs, "-"+p.String())
		}
		parts = append(parts, "cidrs "+strings.Join(cs, " "))
	}
	return strings.Join(parts, "; ")
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

func revokeText(r policy.Revoke) string {
	return oneLine(fmt.Sprintf("%s by %s (%s: %s)", r.Envoy.Label(), r.By, r.Rule, r.Reason))
}

func unadmittedText(u policy.Unadmitted) string {
	from := "an unknown address"
	if u.Envoy.SourceIP.IsValid() {
		from = u.Envoy.SourceIP.String()
	}
	rule := dash(u.Envoy.Rule)
	if u.RuleRemoved {
		rule += " (not in the new policy)"
	}
	return oneLine(fmt.Sprintf("%s from %s, enrolled by %s: %s", u.Envoy.Label(), from, rule, u.New.Reason))
}

func decisionText(d policy.Decision) string {
	if !d.Allowed {
		return "deny"
	}
	return d.Method + " (" + d.Rule + ")"
}

func testChangeText(tc policy.TestChange) string {
	tok := ""
	if tc.Token {
		tok = " with a token"
	}
	return oneLine(fmt.Sprintf("%s from %s%s: %s -> %s (expect %s)", tc.Hostname, tc.IP, tok, decisionText(tc.Old), decisionText(tc.New), tc.Expect))
}

func position(file string, line, col int) string {
	if line == 0 {
		return file
	}
	return fmt.Sprintf("%s:%d:%d", file, line, col)
}

// printDiffGitHub prints GitHub Actions annotations: a warning for each
// envoy the change revokes, notices for envoys no longer admitted, test
// decisions that change and the summary of rule changes.
func printDiffGitHub(w io.Writer, r diffReport) {
	for _, rv := range r.Revokes {
		if !rv.InOld {
			fmt.Fprintln(w, ghCommand("warning", "", 0, 0, "policy diff: envoy revoked", "revokes "+revokeText(rv)))
		}
	}
	for _, u := range r.NoLongerAdmitted {
		fmt.Fprintln(w, ghCommand("notice", "", 0, 0, "policy diff: envoy no longer admitted", unadmittedText(u)))
	}
	for _, tc := range r.TestChanges {
		fmt.Fprintln(w, ghCommand("notice", tc.File, tc.Line, tc.Col, "policy diff: test decision changes", testChangeText(tc)))
	}
	if rp := r.Replay; rp != nil {
		if n := len(rp.NowRefused); n > 0 {
			first, hosts := policy.Hostnames(rp.NowRefused, 10)
			fmt.Fprintln(w, ghCommand("warning", "", 0, 0, "policy diff: past enrollments now refused",
				fmt.Sprintf("%d %s of the last %s would now be refused (%d %s): %s", n, plural2(n, "enrollment"), rp.Period, hosts, plural(hosts, "host", "hosts"), strings.Join(first, ", "))))
		}
		if n := len(rp.NowAdmitted); n > 0 {
			first, hosts := policy.Hostnames(rp.NowAdmitted, 10)
			fmt.Fprintln(w, ghCommand("notice", "", 0, 0, "policy diff: past refusals now admitted",
				fmt.Sprintf("%d %s of the last %s would now be admitted (%d %s): %s", n, plural2(n, "refusal"), rp.Period, hosts, plural(hosts, "host", "hosts"), strings.Join(first, ", "))))
		}
	}
	if n := r.Added.Len() + r.Removed.Len() + r.Changed.Len(); n > 0 {
		fmt.Fprintln(w, ghCommand("notice", "", 0, 0, "policy diff", fmt.Sprintf("%d added, %d removed, %d changed", r.Added.Len(), r.Removed.Len(), r.Changed.Len())))
	}
}

// ghCommand formats a GitHub Actions workflow command, escaped as GitHub
// documents (properties also escape ':' and ',').
func ghCommand(kind, file string, line, col int, title, msg string) string {
	data := strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A")
	prop := strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C")
	var props []string
	if file != "" {
		props = append(props, "file="+prop.Replace(file))
		if line > 0 {
			props = append(props, fmt.Sprintf("line=%d,col=%d", line, col))
		}
	}
	props = append(props, "title="+prop.Replace(title))
	return "::" + kind + " " + strings.Join(props, ",") + "::" + data.Replace(msg)
}
