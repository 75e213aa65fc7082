package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rogpeppe/go-internal/diff"
	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/atomicfile"
)

// editFlags are the flags of the commands that edit a policy checkout.
type editFlags struct {
	dir    string
	commit bool
	branch string
	dryRun bool
}

func (f *editFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", ".", "policy folder to edit (a checkout of the policy repository)")
	fl.BoolVar(&f.commit, "commit", false, "commit the change on a new branch (--branch), ready to push")
	fl.StringVar(&f.branch, "branch", "", "branch for --commit (default: policy/ and the change, such as policy/approve-star.stage.example.com)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "show the change and check it, but write nothing")
}

// editHelp is the part of the help that every editing command shares.
const editHelp = `
The policy folder (--dir, default .) is read with the server's rules, the entry is edited
in place through CUE's syntax tree (every other byte of every file, comments included,
stays as it was), and the result is checked as "vigocli policy vet" checks it, within the
server's evaluation budget, tests: cases included. A change that would not pass is refused
and nothing is written. The change is printed as a diff, with the git commands that
propose it; --commit runs them: it commits on a new branch, ready to push.

Exit status: 0 changed (or would change, with --dry-run), 1 refused (nothing written),
2 usage or I/O error.`

// runEdit makes an edit to the policy folder ef.dir: it reads the folder
// with the tree rules, edits the files in memory, checks the result as vet
// does and only then writes the changed files and prints the diff and the
// git commands (or commits, with --commit). Nothing is written when any
// step fails.
func runEdit(ctx context.Context, g *globals, ev *evalFlags, ef *editFlags, command string, edit func([]policy.File) (*policy.EditResult, error)) error {
	if ef.branch != "" && !ef.commit {
		return &codeError{code: 2, err: errors.New("--branch goes with --commit")}
	}
	if ef.commit && ef.dryRun {
		return &codeError{code: 2, err: errors.New("--commit and --dry-run are exclusive")}
	}
	if _, err := ev.limits(); err != nil {
		return err
	}
	tree, err := readTree(ef.dir)
	if err != nil {
		return err
	}
	if len(tree.Problems) > 0 {
		_, errs, _ := ev.evalTree(ctx, tree, "")
		fmt.Fprintln(g.stderr, prefixErrors(errs, ef.dir))
		return &codeError{code: 1, err: fmt.Errorf("policy %s has problems that vet reports: fix them first; nothing was written", ef.dir)}
	}
	before := policyFiles(tree)
	res, err := edit(before)
	switch {
	case errors.Is(err, policy.ErrNoChange):
		return &codeError{code: 1, err: err}
	case err != nil:
		return &codeError{code: 1, err: fmt.Errorf("%w; nothing was written", err)}
	}

	// Check the edited tree as vet does, within the budget.
	edited := gitsync.Tree{}
	total := 0
	for _, f := range res.Files {
		edited.Files = append(edited.Files, gitsync.File{Name: f.Name, Data: f.Data})
		total += len(f.Data)
	}
	if total > gitsync.MaxTotalSize {
		return &codeError{code: 1, err: fmt.Errorf("%s: the policy files would be larger than %d MiB; nothing was written", command, gitsync.MaxTotalSize>>20)}
	}
	_, errs, err := ev.vetTree(ctx, edited, "")
	if err != nil {
		return err
	}
	if len(errs) > 0 {
		fmt.Fprintln(g.stderr, prefixErrors(errs, ef.dir))
		why := "the edited policy would not pass vet"
		if _, berrs, err := ev.vetTree(ctx, tree, ""); err == nil && len(berrs) > 0 {
			why = "the policy does not pass vet, already before this change: fix it first"
		}
		return &codeError{code: 1, err: fmt.Errorf("%s: refused: %s (%d %s); nothing was written",
			command, why, len(errs), plural(len(errs), "problem", "problems"))}
	}

	old := map[string][]byte{}
	for _, f := range before {
		old[f.Name] = f.Data
	}
	for _, f := range res.Files {
		if name := fileIn(ef.dir, f.Name); !bytes.Equal(old[f.Name], f.Data) || isCreated(res, f.Name) {
			g.stdout.Write(diff.Diff("a/"+name, old[f.Name], "b/"+name, f.Data))
		}
	}
	verb := "edited"
	if ef.dryRun {
		verb = "would edit"
	}
	for _, name := range res.Changed {
		what := verb
		if isCreated(res, name) {
			what = map[bool]string{false: "created", true: "would create"}[ef.dryRun]
		}
		fmt.Fprintf(g.stdout, "%s %s: %s\n", what, fileIn(ef.dir, name), res.Where)
	}
	if ef.dryRun {
		fmt.Fprintln(g.stdout, "dry run: the change passes vet; nothing was written")
		return nil
	}

	branch := ef.branch
	if branch == "" {
		branch = branchFor(res.Summary)
	}
	msg := commitMessage(command, res)
	if ef.commit {
		return commitEdit(ctx, g, ef.dir, branch, msg, res)
	}
	if err := writeEdit(ef.dir, res); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, "\nTo propose it (--commit does this):")
	if filepath.Clean(ef.dir) != "." {
		fmt.Fprintf(g.stdout, "  cd %s\n", shellQuote(ef.dir))
	}
	fmt.Fprintf(g.stdout, "  git switch -c %s\n", shellQuote(branch))
	fmt.Fprintf(g.stdout, "  git add -- %s\n", shellWords(res.Changed))
	fmt.Fprintf(g.stdout, "  git commit -m %s -- %s\n", shellQuote(firstLine(msg)), shellWords(res.Changed))
	fmt.Fprintf(g.stdout, "  git push -u origin %s\n", shellQuote(branch))
	return nil
}

func isCreated(res *policy.EditResult, name string) bool { return slices.Contains(res.Created, name) }

// writeEdit writes the changed files of res into dir, each atomically
// (an existing file keeps its permissions).
func writeEdit(dir string, res *policy.EditResult) error {
	for _, f := range res.Files {
		if !slices.Contains(res.Changed, f.Name) {
			continue
		}
		path := filepath.Join(dir, filepath.FromSlash(f.Name))
		mode := fs.FileMode(0o644)
		if fi, err := os.Lstat(path); err == nil {
			mode = fi.Mode().Perm()
		}
		if err := atomicfile.Write(path, f.Data, mode); err != nil {
			return &codeError{code: 2, err: err}
		}
	}
	return nil
}

// commitEdit writes the change and commits it on a new branch. What git
// must allow is checked before anything is written: dir is in a work tree,
// the branch is new and valid, and the files to change have no changes of
// their own (which the commit would take along).
func commitEdit(ctx context.Context, g *globals, dir, branch, msg string, res *policy.EditResult) error {
	if _, err := git(ctx, dir, "rev-parse", "--show-toplevel"); err != nil {
		return &codeError{code: 2, err: fmt.Errorf("--commit: %s is not in a git work tree: %w", dir, err)}
	}
	if _, err := git(ctx, dir, "check-ref-format", "--branch", branch); err != nil {
		return &codeError{code: 2, err: fmt.Errorf("--commit: %q is not a valid branch name (pass --branch)", branch)}
	}
	if _, err := git(ctx, dir, "rev-parse", "--verify", "--quiet", "refs/heads/"+branch); err == nil {
		return &codeError{code: 1, err: fmt.Errorf("--commit: branch %s exists already: pass another --branch; nothing was written", branch)}
	}
	if out, err := git(ctx, dir, append([]string{"status", "--porcelain", "--"}, res.Changed...)...); err != nil {
		return &codeError{code: 2, err: fmt.Errorf("--commit: %w", err)}
	} else if strings.TrimSpace(out) != "" {
		return &codeError{code: 1, err: fmt.Errorf("--commit: %s has uncommitted changes that the commit would take along: commit or stash them first; nothing was written",
			strings.Join(res.Changed, ", "))}
	}
	if _, err := git(ctx, dir, "switch", "--quiet", "-c", branch); err != nil {
		return &codeError{code: 1, err: fmt.Errorf("--commit: %w; nothing was written", err)}
	}
	if err := writeEdit(dir, res); err != nil {
		return err
	}
	if _, err := git(ctx, dir, append([]string{"add", "--"}, res.Changed...)...); err != nil {
		return &codeError{code: 1, err: fmt.Errorf("--commit: the change is written on branch %s but not committed: %w", branch, err)}
	}
	if _, err := git(ctx, dir, append([]string{"commit", "--quiet", "-m", msg, "--"}, res.Changed...)...); err != nil {
		return &codeError{code: 1, err: fmt.Errorf("--commit: the change is written on branch %s but not committed: %w", branch, err)}
	}
	head, _ := git(ctx, dir, "rev-parse", "--short", "HEAD")
	fmt.Fprintf(g.stdout, "\ncommitted %s on branch %s: %s\n", strings.TrimSpace(head), branch, firstLine(msg))
	fmt.Fprintf(g.stdout, "Push it and open a pull request:\n  git push -u origin %s\n", shellQuote(branch))
	return nil
}

// git runs the git CLI in dir and returns its output; the error carries
// what git said.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return out.String(), fmt.Errorf("git %s: %s", args[0], msg)
	}
	return out.String(), nil
}

// commitMessage says what changed: the summary as the subject, the details
// and where the edit was made in the body.
func commitMessage(command string, res *policy.EditResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy: %s\n\n", res.Summary)
	for _, d := range res.Details {
		fmt.Fprintf(&b, "%s\n", d)
	}
	fmt.Fprintf(&b, "\nMade with %q in %s; checked as \"vigocli policy vet\" checks it.\n", command, res.Where)
	return b.String()
}

// branchFor derives a branch name from a change summary:
// "approve *.stage.example.com" -> "policy/approve-star.stage.example.com".
func branchFor(summary string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(summary) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_':
			b.WriteRune(r)
			dash = false
		case r == '*':
			b.WriteString("star")
			dash = false
		case !dash:
			b.WriteByte('-')
			dash = true
		}
	}
	s := strings.Trim(b.String(), "-.")
	for strings.Contains(s, "..") {
		s = strings.ReplaceAll(s, "..", ".")
	}
	if len(s) > 60 {
		s = strings.TrimRight(s[:60], "-.")
	}
	s = strings.TrimSuffix(s, ".lock")
	if s == "" {
		s = "change"
	}
	return "policy/" + s
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@=+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shellWords(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = shellQuote(s)
	}
	return strings.Join(q, " ")
}

// ---- the editing commands ----

func newApprovedCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approved",
		Short: "Add or remove approved hostname patterns in a policy checkout",
	}
	ev := &evalFlags{}
	ev.register(cmd)
	for _, add := range []bool{true, false} {
		ef := &editFlags{}
		var replace string
		c := &cobra.Command{
			Use:   "add PATTERN...",
			Short: "Approve hostname patterns: hosts matching them enroll from anywhere without a token",
			Long: `Add appends each PATTERN (a hostname glob, such as *.stage.example.com) to the list
approved of the policy. A pattern already approved is refused.

Anyone who can reach the server can claim an approved name, so say with --replace who
may take over the name of a host that is already enrolled: token (a one-time token for
that hostname, or the envoy itself) or proof (only the envoy itself; revoke it first to
re-enroll a host that lost its key). Without --replace, anyone matching may (any).
` + editHelp,
			Example: `  vigocli approved add '*.stage.example.com' --replace proof --commit
  vigocli approved add web7.example.com --dir policy --dry-run`,
			Args: minArgs(1, "a pattern"),
		}
		name := "vigocli approved add"
		if !add {
			c.Use = "remove PATTERN..."
			c.Short = "Stop approving hostname patterns (envoys already enrolled stay enrolled)"
			c.Long = `Remove takes each PATTERN out of the list approved of the policy. Envoys already
enrolled by it stay enrolled; new registrations need another rule or a token.
` + editHelp
			c.Example = "  vigocli approved remove '*.stage.example.com' --commit"
			name = "vigocli approved remove"
		}
		c.RunE = func(cmd *cobra.Command, args []string) error {
			return runEdit(cmd.Context(), g, ev, ef, name, func(files []policy.File) (*policy.EditResult, error) {
				if add {
					return policy.AddApproved(files, replace, args...)
				}
				return policy.RemoveApproved(files, args...)
			})
		}
		if add {
			c.Flags().StringVar(&replace, "replace", "", replaceHelp+" (default any)")
		}
		ef.register(c)
		cmd.AddCommand(c)
	}
	return cmd
}

// replaceHelp describes --replace of the add commands.
const replaceHelp = "who may replace an enrolled envoy of a matching hostname (--force): any, token or proof"

func newTrustedCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trusted",
		Short: "Add or remove trusted_enrollment entries (hostname pattern AND source networks) in a policy checkout",
	}
	ev := &evalFlags{}
	ev.register(cmd)

	addFlags := &editFlags{}
	var te policy.TrustedEdit
	add := &cobra.Command{
		Use:   "add --name N --pattern P --cidr C...",
		Short: "Trust hosts whose name matches a pattern when they register from one of the networks",
		Long: `Add appends an entry to trusted_enrollment: hosts whose hostname matches --pattern and
whose registration comes from one of the --cidr networks enroll without a token. The
entry is named --name (unique), which names the rule in decisions and audit logs.
` + editHelp,
		Example: `  vigocli trusted add --name lab --pattern '*.lab.example.com' --cidr 10.30.0.0/16 --cidr fd00:30::/48 --commit`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if te.Name == "" || te.Pattern == "" || len(te.CIDRs) == 0 {
				return &codeError{code: 2, err: errors.New("trusted add needs --name, --pattern and at least one --cidr")}
			}
			return runEdit(cmd.Context(), g, ev, addFlags, "vigocli trusted add", func(files []policy.File) (*policy.EditResult, error) {
				return policy.AddTrusted(files, te)
			})
		},
	}
	add.Flags().StringVar(&te.Name, "name", "", "name of the entry (unique)")
	add.Flags().StringVar(&te.Pattern, "pattern", "", "hostname glob, such as *.lab.example.com")
	add.Flags().StringSliceVar(&te.CIDRs, "cidr", nil, "source network in CIDR notation (repeat, or separate with commas)")
	add.Flags().StringVar(&te.Replace, "replace", "", replaceHelp+" (default any)")
	addFlags.register(add)

	rmFlags := &editFlags{}
	rm := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove the trusted_enrollment entry named NAME (envoys already enrolled stay enrolled)",
		Long: `Remove takes the entry named NAME out of trusted_enrollment. Envoys already enrolled by
it stay enrolled; new registrations need another rule or a token.
` + editHelp,
		Example: "  vigocli trusted remove lab --commit",
		Args:    exactArgs(1, "the name of the entry"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runEdit(cmd.Context(), g, ev, rmFlags, "vigocli trusted remove", func(files []policy.File) (*policy.EditResult, error) {
				return policy.RemoveTrusted(files, args[0])
			})
		},
	}
	rmFlags.register(rm)
	cmd.AddCommand(add, rm)
	return cmd
}

// newPolicyEditCmds are the editing commands of the policy group: revoke,
// unrevoke and set.
func newPolicyEditCmds(g *globals, ev *evalFlags) []*cobra.Command {
	var r policy.Revocation
	revFlags := &editFlags{}
	revoke := &cobra.Command{
		Use:   "revoke --hostname H | --uuid U --reason R",
		Short: "Revoke envoys in the policy: by exact hostname (also refusing new registrations of it) or by UUID",
		Long: `Revoke appends an entry to revocations: --hostname revokes every envoy with that exact
name and refuses new registrations of it; --uuid revokes one enrolled envoy (both may be
given). --reason is required: audit logs and operators see it. Once the server applies
the revision, the envoys' next check-ins are refused; revocation is one-way (an envoy
revoked stays revoked even when the entry is removed).
` + editHelp,
		Example: `  vigocli policy revoke --hostname db1.dc1.example.com --reason 'decommissioned (CHG-1042)' --commit
  vigocli policy revoke --uuid 0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11 --reason 'stolen laptop'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r.Hostname == "" && r.UUID == "" {
				return &codeError{code: 2, err: errors.New("policy revoke needs --hostname or --uuid")}
			}
			if strings.TrimSpace(r.Reason) == "" {
				return &codeError{code: 2, err: errors.New("policy revoke needs --reason")}
			}
			return runEdit(cmd.Context(), g, ev, revFlags, "vigocli policy revoke", func(files []policy.File) (*policy.EditResult, error) {
				return policy.AddRevocation(files, r)
			})
		},
	}
	revoke.Flags().StringVar(&r.Hostname, "hostname", "", "exact hostname to revoke")
	revoke.Flags().StringVar(&r.UUID, "uuid", "", "UUID of the envoy to revoke (vigocli envoys list)")
	revoke.Flags().StringVar(&r.Reason, "reason", "", "why (required)")
	revFlags.register(revoke)

	var ur policy.Revocation
	unFlags := &editFlags{}
	unrevoke := &cobra.Command{
		Use:   "unrevoke --hostname H | --uuid U",
		Short: "Remove a revocation from the policy (new registrations of the name are possible again)",
		Long: `Unrevoke removes the entry of revocations that names --hostname or --uuid. New
registrations of the hostname are allowed again by the other rules; envoys already
revoked stay revoked (revocation is one-way: they register again).
` + editHelp,
		Example: "  vigocli policy unrevoke --hostname db1.dc1.example.com --commit",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (ur.Hostname == "") == (ur.UUID == "") {
				return &codeError{code: 2, err: errors.New("policy unrevoke needs --hostname or --uuid (one of them)")}
			}
			return runEdit(cmd.Context(), g, ev, unFlags, "vigocli policy unrevoke", func(files []policy.File) (*policy.EditResult, error) {
				return policy.RemoveRevocation(files, ur.UUID, ur.Hostname)
			})
		},
	}
	unrevoke.Flags().StringVar(&ur.Hostname, "hostname", "", "hostname whose revocation to remove")
	unrevoke.Flags().StringVar(&ur.UUID, "uuid", "", "UUID whose revocation to remove")
	unFlags.register(unrevoke)

	setFlags := &editFlags{}
	set := &cobra.Command{
		Use:   "set SETTING VALUE",
		Short: "Set a policy setting: cert-validity (cert_validity) or token-max-ttl (tokens.max_ttl)",
		Long: `Set changes a setting of the policy to a Go duration:

  cert-validity   cert_validity: how long new client certificates are valid (1h to 87600h)
  token-max-ttl   tokens.max_ttl: the longest lifetime of a new token (up to 8760h)

A setting that no file holds is added (to settings.cue).
` + editHelp,
		Example: `  vigocli policy set cert-validity 2160h --commit
  vigocli policy set token-max-ttl 24h`,
		Args: exactArgs(2, "a setting and a value"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case policy.SettingCertValidity, policy.SettingTokenMaxTTL:
			default:
				return &codeError{code: 2, err: fmt.Errorf("unknown setting %q: the settings are %s and %s", args[0], policy.SettingCertValidity, policy.SettingTokenMaxTTL)}
			}
			return runEdit(cmd.Context(), g, ev, setFlags, "vigocli policy set "+args[0], func(files []policy.File) (*policy.EditResult, error) {
				return policy.SetSetting(files, args[0], args[1])
			})
		},
	}
	setFlags.register(set)
	return []*cobra.Command{revoke, unrevoke, set}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return &codeError{code: 2, err: fmt.Errorf("%s needs %s (see '%s --help')", cmd.CommandPath(), what, cmd.CommandPath())}
		}
		return nil
	}
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return &codeError{code: 2, err: fmt.Errorf("%s takes %s, got %d arguments (see '%s --help')", cmd.CommandPath(), what, len(args), cmd.CommandPath())}
		}
		return nil
	}
}
