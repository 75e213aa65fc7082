package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

func newPolicyWaitCmd(g *globals) *cobra.Command {
	var (
		revision string
		dir      string
		timeout  time.Duration
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait SHA|--revision SHA [--timeout 5m] [--dir DIR]",
		Short: "Wait until the server applies a revision (exit 0), refuses it (1) or the time is up (2)",
		Long: `Wait polls the server's policy status until the revision SHA (a commit of the policy
repository, such as the merge commit of a pull request) or a later revision that contains
it is active, and exits 0. It exits 1 when the server refused that revision, or a later
revision that contains it (the change cannot apply until a fix is merged), printing the
errors as file:line:col; 2 when --timeout passes first (or on a usage error, such as a
credential the server refuses).

"A later revision that contains it" is decided by the Git checkout of the policy
repository at --dir (default .): git merge-base --is-ancestor. Without a checkout, or
when the server's revision is not in it (git fetch), only SHA itself counts: a server
that moved on to a later commit before the first poll is not recognized, and wait runs
until the timeout. An abbreviated SHA is resolved in the checkout.

The status is that of the replica that answers: behind a load balancer, wait on each
replica (--server) to know that all applied it. Any admin token works, read-only
included. The server applies a pushed commit at its next poll (policy.git.interval) or
at once when the webhook reaches it.`,
		Example: `  # after a merge, in CI (the checkout has the merge commit):
  vigocli policy wait --revision "$GITHUB_SHA" --timeout 5m
  vigocli policy wait $(git rev-parse HEAD) --dir policy-repo`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if revision != "" {
					return &codeError{code: 2, err: errors.New("give the revision once: as the argument or as --revision")}
				}
				revision = args[0]
			}
			if revision == "" {
				return &codeError{code: 2, err: errors.New("--revision is required: the commit to wait for (or give it as the argument: vigocli policy wait SHA)")}
			}
			if timeout <= 0 || interval <= 0 {
				return &codeError{code: 2, err: errors.New("--timeout and --interval must be positive")}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			w := &waiter{g: g, dir: dir, want: revision}
			w.resolve(ctx)
			deadline := time.Now().Add(timeout)
			var last *apiv1.PolicyStatus // the last status read
			for {
				var st apiv1.PolicyStatus
				pctx, cancel := context.WithDeadline(ctx, deadline)
				err := c.do(pctx, "GET", "/api/v1/policy/status", nil, &st)
				cancel()
				var he *httpError
				switch {
				case errors.As(err, &he):
					// The server answered and will answer the same: no
					// point in waiting.
					return &codeError{code: 2, err: err}
				case err != nil:
					w.note("cannot read the policy status (trying again until the timeout): %v", err)
				default:
					last = &st
					if done, err := w.judge(ctx, st); done {
						return err
					}
				}
				left := time.Until(deadline)
				if left <= 0 {
					break
				}
				select {
				case <-ctx.Done():
					return &codeError{code: 2, err: ctx.Err()}
				case <-time.After(min(interval, left)):
				}
			}
			state := "the status could not be read"
			if last != nil {
				state = fmt.Sprintf("replica %s has none active", dash(last.Replica))
				if last.Active != nil {
					state = fmt.Sprintf("replica %s has %s active", dash(last.Replica), last.Active.Revision)
				}
			}
			return &codeError{code: 2, err: fmt.Errorf("revision %s is not active after %s: %s%s", w.want, timeout, state, w.hint)}
		},
	}
	f := cmd.Flags()
	f.StringVar(&revision, "revision", "", "commit to wait for (required)")
	f.StringVar(&dir, "dir", ".", "checkout of the policy repository, to recognize later revisions that contain --revision")
	f.DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	f.DurationVar(&interval, "interval", time.Second, "time between two polls of the status")
	return cmd
}

// waiter judges policy statuses against the revision waited for.
type waiter struct {
	g    *globals
	dir  string
	want string // the revision, full when the checkout resolved it
	git  bool   // dir is a checkout that has want
	hint string // why a later revision may not have been recognized
	said map[string]bool
}

// resolve completes an abbreviated revision from the checkout and notes
// whether ancestry can be decided.
func (w *waiter) resolve(ctx context.Context) {
	out, err := git(ctx, w.dir, "rev-parse", "--verify", "--quiet", w.want+"^{commit}")
	switch {
	case err == nil:
		w.want, w.git = strings.TrimSpace(out), true
	case isGitRepo(ctx, w.dir):
		w.hint = fmt.Sprintf(" (the checkout at %s does not have %s: git fetch, so that later revisions that contain it are recognized)", w.dir, w.want)
	default:
		w.hint = fmt.Sprintf(" (%s is not a Git checkout of the policy repository: only %s itself counts, not a later revision that contains it)", w.dir, w.want)
	}
}

func isGitRepo(ctx context.Context, dir string) bool {
	_, err := git(ctx, dir, "rev-parse", "--git-dir")
	return err == nil
}

// judge decides whether st settles the wait: done with nil (applied) or
// with an exit-1 error (refused).
func (w *waiter) judge(ctx context.Context, st apiv1.PolicyStatus) (done bool, err error) {
	if a := st.Active; a != nil {
		switch {
		case sameRevision(a.Revision, w.want):
			fmt.Fprintf(w.g.stdout, "revision %s is active on replica %s (applied %s)\n", a.Revision, dash(st.Replica), fmtTime(&a.AppliedAt))
			return true, nil
		case w.contains(ctx, a.Revision):
			fmt.Fprintf(w.g.stdout, "revision %s is active on replica %s (applied %s), and it contains %s\n", a.Revision, dash(st.Replica), fmtTime(&a.AppliedAt), w.want)
			return true, nil
		}
	}
	if at := st.Attempted; at != nil && !at.Valid {
		what := ""
		switch {
		case sameRevision(at.Revision, w.want):
			what = fmt.Sprintf("revision %s was refused by replica %s", at.Revision, dash(st.Replica))
		case w.contains(ctx, at.Revision):
			what = fmt.Sprintf("revision %s, which contains %s, was refused by replica %s: the change cannot apply until a fix is merged", at.Revision, w.want, dash(st.Replica))
		}
		if what != "" {
			kind := at.Kind
			if kind == "" {
				kind = "invalid"
			}
			fmt.Fprintf(w.g.stdout, "%s (%s); the last good revision stays active:\n", what, kind)
			for _, e := range at.Errors {
				pe := policy.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Message}
				fmt.Fprintf(w.g.stdout, "  %s\n", pe.Error())
			}
			return true, &codeError{code: 1, err: fmt.Errorf("revision %s was refused", w.want)}
		}
	}
	return false, nil
}

// contains reports whether revision rev contains the revision waited for
// (is a descendant of it), as far as the checkout knows.
func (w *waiter) contains(ctx context.Context, rev string) bool {
	if !w.git || !isHex(rev) {
		return false
	}
	cmd := exec.CommandContext(ctx, "git", "-C", w.dir, "merge-base", "--is-ancestor", w.want, rev)
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return false
	}
	// The checkout does not have rev (yet).
	w.hint = fmt.Sprintf(" (the checkout at %s does not have the server's revision %s: git fetch, so that it can tell whether it contains %s)", w.dir, rev, w.want)
	w.note("the checkout at %s does not have the server's revision %s: only %s itself counts until it does", w.dir, rev, w.want)
	return false
}

// note tells something on stderr, once.
func (w *waiter) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if w.said == nil {
		w.said = map[string]bool{}
	}
	if !w.said[msg] {
		w.said[msg] = true
		fmt.Fprintln(w.g.stderr, "vigocli: "+msg)
	}
}

// sameRevision compares revisions, an abbreviated commit (7 hex digits or
// more) matching its full form.
func sameRevision(a, b string) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	if a == b {
		return true
	}
	if len(a) < 7 || len(b) < 7 || !isHex(a) || !isHex(b) {
		return false
	}
	return strings.HasPrefix(a, b) || strings.HasPrefix(b, a)
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range strings.ToLower(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
