package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/policy/sandbox"
)

// evalFlags are the evaluation limits of the policy commands: the same
// budget the server applies (policy.eval_limits), so that CI refuses what
// the server would refuse.
type evalFlags struct {
	memory  string
	timeout time.Duration
}

func (f *evalFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.memory, "eval-memory", "256MiB", "most memory evaluating a policy may use (the server's policy.eval_limits.memory)")
	pf.DurationVar(&f.timeout, "eval-timeout", sandbox.DefaultTimeout, "longest evaluating a policy may take (the server's policy.eval_limits.timeout)")
}

func (f *evalFlags) limits() (sandbox.Limits, error) {
	mem, err := sandbox.ParseSize(f.memory)
	if err != nil {
		return sandbox.Limits{}, &codeError{code: 2, err: fmt.Errorf("--eval-memory: %w", err)}
	}
	l := sandbox.Limits{Memory: mem, Timeout: f.timeout}
	if f.timeout <= 0 {
		return sandbox.Limits{}, &codeError{code: 2, err: fmt.Errorf("--eval-timeout %s: must be positive", f.timeout)}
	}
	if err := l.Check(); err != nil {
		return sandbox.Limits{}, &codeError{code: 2, err: fmt.Errorf("--eval-memory: %w", err)}
	}
	return l, nil
}

// loadPolicy reads the policy folder dir with the server's tree rules and
// evaluates it as the server does: in a child process within the limits of
// f. It returns the policy, or the problems (file tree, content, budget) as
// policy.Errors with file names relative to dir; err is a usage or I/O
// error (exit 2).
func (f *evalFlags) loadPolicy(ctx context.Context, dir, revision string) (*policy.Policy, policy.Errors, error) {
	tree, err := readTree(dir)
	if err != nil {
		return nil, nil, err
	}
	return f.evalTree(ctx, tree, revision)
}

// readTree reads the policy folder dir with the server's tree rules.
func readTree(dir string) (gitsync.Tree, error) {
	tree, err := gitsync.ReadDir(dir)
	if err != nil {
		return gitsync.Tree{}, &codeError{code: 2, err: err}
	}
	return tree, nil
}

// evalTree evaluates a policy tree (as read by readTree, possibly edited
// in memory) as loadPolicy does.
func (f *evalFlags) evalTree(ctx context.Context, tree gitsync.Tree, revision string) (*policy.Policy, policy.Errors, error) {
	lim, err := f.limits()
	if err != nil {
		return nil, nil, err
	}
	if len(tree.Problems) > 0 {
		es := make(policy.Errors, len(tree.Problems))
		for i, p := range tree.Problems {
			es[i] = &policy.Error{File: p.Path, Msg: p.Msg}
		}
		return nil, es, nil
	}
	spec, err := sandbox.Evaluate(ctx, policyFiles(tree), lim)
	if err == nil {
		var p *policy.Policy
		if p, err = spec.Compile(revision); err == nil {
			return p, nil, nil
		}
	}
	if es, ok := sandbox.Errors(err); ok {
		return nil, es, nil
	}
	return nil, nil, &codeError{code: 2, err: err}
}

// vetTree checks a policy tree as vet does: evalTree, then the policy's
// tests: cases, whose failures join the problems.
func (f *evalFlags) vetTree(ctx context.Context, tree gitsync.Tree, revision string) (*policy.Policy, policy.Errors, error) {
	p, errs, err := f.evalTree(ctx, tree, revision)
	if err != nil {
		return nil, nil, err
	}
	if p != nil {
		for _, tf := range p.RunTests() {
			errs = append(errs, tf.Err())
		}
	}
	return p, errs, nil
}

// policyFiles returns the policy files of a tree.
func policyFiles(tree gitsync.Tree) []policy.File {
	files := make([]policy.File, len(tree.Files))
	for i, fl := range tree.Files {
		files[i] = policy.File{Name: fl.Name, Data: fl.Data}
	}
	return files
}
