package policyctl_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/policy/sandbox"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/policyctl"
	"github.com/vigo-enroll/vigo/server/store"
)

// countingEvaluator counts evaluations and passes them to the sandbox
// (with its Limits), or fails them all when fail is set.
type countingEvaluator struct {
	n      atomic.Int32
	limits sandbox.Limits
	fail   error
}

func (c *countingEvaluator) Evaluate(ctx context.Context, files []policy.File) (*policy.Spec, error) {
	c.n.Add(1)
	if c.fail != nil {
		return nil, c.fail
	}
	return (&sandbox.Evaluator{Limits: c.limits}).Evaluate(ctx, files)
}

// memoryBomb asks for 2^32 bytes in a few hundred bytes of CUE.
func memoryBomb() string {
	var b strings.Builder
	b.WriteString("package policy\n_a0: \"xx\"\n")
	for i := 1; i <= 31; i++ {
		fmt.Fprintf(&b, "_a%d: _a%d + _a%d\n", i, i-1, i-1)
	}
	b.WriteString("_n: len(_a31)\n")
	return b.String()
}

// cpuBomb is a six-line nested comprehension that runs for minutes.
const cpuBomb = `package policy

import "list"

_r: list.Range(0, 20000, 1)
_x: [for i in _r for j in _r if i == j && i < 0 {i}]
`

// smallLimits keep the bombs quick to refuse in tests.
var smallLimits = sandbox.Limits{Memory: 128 << 20, Timeout: 3 * time.Second}

func newLimitedController(t *testing.T, src gitsync.Source, st store.Store, eval policyctl.Evaluator, reg prometheus.Registerer) *policyctl.Controller {
	t.Helper()
	ctl, err := policyctl.New(policyctl.Config{
		Source: src, Store: st, Interval: time.Minute, Replica: "r1", Limits: smallLimits, Evaluator: eval, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ctl
}

// TestBombsRefused pushes each policy bomb to a Git repository and writes
// it into a watched folder: each is refused within the budget, with the
// limit and the file named, the last good revision stays active, the
// refusal is audited and remembered in the store, and this process lives.
func TestBombsRefused(t *testing.T) {
	t.Parallel()
	bombs := []struct {
		name, content, limit string
		limits               sandbox.Limits
	}{
		{"memory", memoryBomb(), "the memory limit of 128 MiB while evaluating this file", smallLimits},
		// The CPU bomb holds ~100 MB while it runs: a budget of 256 MiB
		// makes sure the time limit is the one it hits.
		{"cpu", cpuBomb, "the time limit of 3s while evaluating this file", sandbox.Limits{Memory: 256 << 20, Timeout: 3 * time.Second}},
	}
	for _, b := range bombs {
		for _, source := range []string{"git", "dir"} {
			t.Run(b.name+"/"+source, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				st := openStore(t)
				var src gitsync.Source
				var write func(name, content string) string // returns the revision id, "" for a folder
				switch source {
				case "git":
					repo := gitsynctest.NewRepo(t)
					g, err := gitsync.NewGit(gitsync.GitConfig{URL: repo.URL(), Path: "policy"})
					if err != nil {
						t.Fatal(err)
					}
					src = g
					write = func(name, content string) string {
						id := repo.Commit(map[string]string{"policy/" + name: content}, name)
						repo.Push()
						return id
					}
				case "dir":
					dir := t.TempDir()
					d, err := gitsync.NewDir(gitsync.DirConfig{Path: dir})
					if err != nil {
						t.Fatal(err)
					}
					src = d
					write = func(name, content string) string {
						if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
							t.Fatal(err)
						}
						return ""
					}
				}
				reg := prometheus.NewRegistry()
				ctl, err := policyctl.New(policyctl.Config{
					Source: src, Store: st, Interval: time.Minute, Replica: "r1", Limits: b.limits, Registerer: reg,
				})
				if err != nil {
					t.Fatal(err)
				}
				write("policy.cue", validPolicy)
				st1, err := ctl.SyncNow(ctx)
				if err != nil || st1.Active == nil {
					t.Fatalf("good revision: %v %+v", err, st1.Attempted)
				}
				good := st1.Active.Revision

				write("zz_bomb.cue", b.content)
				st2, err := ctl.SyncNow(ctx)
				if err != nil {
					t.Fatalf("SyncNow with the bomb: %v", err)
				}
				a := st2.Attempted
				if a == nil || a.Valid || a.Kind != "budget" || a.Revision == good {
					t.Fatalf("bomb attempt = %+v, want refused for its budget", a)
				}
				if len(a.Errors) != 1 || a.Errors[0].File != "zz_bomb.cue" || !strings.Contains(a.Errors[0].Message, b.limit) {
					t.Errorf("bomb errors = %+v, want one in zz_bomb.cue naming %q", a.Errors, b.limit)
				}
				if st2.Healthy || !strings.Contains(st2.Reason, "exceeded the budget ("+b.limits.String()+")") {
					t.Errorf("status after the bomb: healthy=%v reason=%q", st2.Healthy, st2.Reason)
				}
				if ctl.Active().Revision() != good {
					t.Errorf("active = %s, want the last good %s", ctl.Active().Revision(), good)
				}
				refusals, err := st.ListPolicyRefusals(ctx, "r1")
				if err != nil || len(refusals) != 1 || refusals[0].Revision != a.Revision || refusals[0].Kind != "budget" || refusals[0].Limits != b.limits.String() {
					t.Errorf("remembered refusals = %+v, %v", refusals, err)
				}
				if v := metricValues(t, reg)[`vigo_policy_sync_errors_total{kind="budget"}`]; v != 1 {
					t.Errorf("budget refusals counted %v, want 1", v)
				}
				rejected, _ := st.ListAudit(ctx, time.Time{}, 0)
				var found bool
				for _, e := range rejected {
					found = found || e.Type == store.AuditPolicyRejected && e.Details["kind"] == "budget" && e.Details["limits"] == b.limits.String()
				}
				if !found {
					t.Errorf("no policy.rejected audit event of kind budget")
				}

				// The fix applies at the next sync.
				write("zz_bomb.cue", "package policy\n")
				st3, err := ctl.SyncNow(ctx)
				if err != nil || !st3.Healthy || st3.Active.Revision == good || st3.Active.Revision == a.Revision {
					t.Errorf("after the fix: %v %+v", err, st3)
				}
			})
		}
	}
}

// TestNewerRevisionStopsEvaluation: with a time budget far longer than the
// test, a runaway evaluation is stopped by the next revision (a push and a
// webhook, here Trigger), which is applied without waiting for the budget.
func TestNewerRevisionStopsEvaluation(t *testing.T) {
	t.Parallel()
	repo := gitsynctest.NewRepo(t)
	repo.Commit(map[string]string{"policy/policy.cue": validPolicy}, "good")
	repo.Push()
	src, err := gitsync.NewGit(gitsync.GitConfig{URL: repo.URL(), Path: "policy"})
	if err != nil {
		t.Fatal(err)
	}
	applied := make(chan string, 4)
	ctl, err := policyctl.New(policyctl.Config{
		Source: src, Store: openStore(t), Interval: time.Hour, Replica: "r1",
		Limits:    sandbox.Limits{Timeout: time.Hour},
		OnApplied: func(p *policy.Policy) { applied <- p.Revision() },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	defer func() {
		cancel() // shutdown also stops an evaluation
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("Run did not stop")
		}
	}()
	wait := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; status %+v", what, ctl.Status())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	select {
	case <-applied:
	case <-time.After(time.Minute):
		t.Fatal("the first revision was not applied")
	}
	bomb := repo.Commit(map[string]string{"policy/slow.cue": cpuBomb}, "slow")
	repo.Push()
	ctl.Trigger()
	wait("the bomb's evaluation", func() bool { return ctl.Status().Evaluating == bomb })
	if st := ctl.Status(); st.EvaluatingSince == nil {
		t.Errorf("status while evaluating = %+v, want the start time", st)
	}
	fix := repo.Commit(map[string]string{"policy/slow.cue": "package policy\n"}, "revert")
	repo.Push()
	ctl.Trigger()
	select {
	case id := <-applied:
		if id != fix {
			t.Errorf("applied %s, want the fix %s", id, fix)
		}
	case <-time.After(time.Minute):
		t.Fatalf("the fix was not applied while the bomb was being evaluated; status %+v", ctl.Status())
	}
	if st := ctl.Status(); st.Evaluating != "" || !st.Healthy {
		t.Errorf("status after the fix = %+v", st)
	}
}

// TestRestartWithHostileHead restarts a server whose newest commit is a
// bomb: it starts, serves the last good revision without evaluating any
// policy content, and does not evaluate the bomb again.
func TestRestartWithHostileHead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	repo := gitsynctest.NewRepo(t)
	good := repo.Commit(map[string]string{"policy/policy.cue": validPolicy}, "good")
	repo.Push()
	st := openStore(t)
	newSrc := func() gitsync.Source {
		src, err := gitsync.NewGit(gitsync.GitConfig{URL: repo.URL(), Path: "policy"})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	first := &countingEvaluator{limits: smallLimits}
	ctl := newLimitedController(t, newSrc(), st, first, nil)
	if _, err := ctl.SyncNow(ctx); err != nil {
		t.Fatal(err)
	}
	bomb := repo.Commit(map[string]string{"policy/zz.cue": memoryBomb()}, "bomb")
	repo.Push()
	if s, err := ctl.SyncNow(ctx); err != nil || s.Attempted.Valid {
		t.Fatalf("bomb: %v %+v", err, s.Attempted)
	}

	// The restart: the evaluator fails every call, so any evaluation fails
	// the test.
	second := &countingEvaluator{fail: errors.New("no evaluation expected")}
	ctl2 := newLimitedController(t, newSrc(), st, second, nil)
	if err := ctl2.Restore(ctx); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if ctl2.Active().Revision() != good {
		t.Fatalf("restored %s, want %s", ctl2.Active().Revision(), good)
	}
	s, err := ctl2.SyncNow(ctx)
	if err != nil {
		t.Fatalf("SyncNow after restart: %v", err)
	}
	if n := second.n.Load(); n != 0 {
		t.Errorf("the restarted server evaluated policy content %d times, want 0", n)
	}
	if s.Active.Revision != good || s.Attempted.Revision != bomb || s.Attempted.Valid || s.Attempted.Kind != "budget" {
		t.Errorf("status after restart: active %+v attempted %+v", s.Active, s.Attempted)
	}

	// Under other limits the refusal is judged again (an operator who
	// raised them expects it); here it still does not fit.
	third := &countingEvaluator{limits: sandbox.Limits{Memory: 160 << 20, Timeout: 3 * time.Second}}
	ctl3, err := policyctl.New(policyctl.Config{Source: newSrc(), Store: st, Interval: time.Minute, Replica: "r1",
		Limits: third.limits, Evaluator: third})
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl3.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := ctl3.SyncNow(ctx); err != nil || s.Attempted.Valid || third.n.Load() != 1 {
		t.Errorf("under new limits: %v %+v, %d evaluations, want 1", err, s.Attempted, third.n.Load())
	}
}

// TestRestoreEvaluatesOldRevisions: a revision saved by an older server
// (no compiled form) is evaluated at restore, within the budget.
func TestRestoreEvaluatesOldRevisions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openStore(t)
	if err := st.SavePolicyRevision(ctx, store.PolicyRevision{ID: "old", Files: map[string][]byte{"policy.cue": []byte(validPolicy)}, AppliedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	src, err := gitsync.NewDir(gitsync.DirConfig{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	evals := &countingEvaluator{limits: smallLimits}
	ctl := newLimitedController(t, src, st, evals, nil)
	if err := ctl.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if ctl.Active().Revision() != "old" || evals.n.Load() != 1 {
		t.Errorf("restored %v after %d evaluations, want old after 1", ctl.Active().Revision(), evals.n.Load())
	}
}

// TestFetchFailureUnhealthyAtOnce: a deleted branch or an unreachable
// remote makes the status unhealthy at the next sync, with the reason; the
// failure is audited once and its end too.
func TestFetchFailureUnhealthyAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	repo := gitsynctest.NewRepo(t)
	repo.Commit(map[string]string{"policy/policy.cue": validPolicy}, "good")
	repo.Push()
	srv := gitsynctest.NewHTTPServer(t, repo.Bare, gitsynctest.HTTPOptions{})
	src, err := gitsync.NewGit(gitsync.GitConfig{URL: srv.URL, Path: "policy", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t)
	reg := prometheus.NewRegistry()
	ctl := newLimitedController(t, src, st, nil, reg)
	if s, err := ctl.SyncNow(ctx); err != nil || !s.Healthy {
		t.Fatalf("first sync: %v %+v", err, s)
	}
	audits := func(typ string) int {
		evs, err := st.ListAudit(ctx, time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range evs {
			if e.Type == typ {
				n++
			}
		}
		return n
	}

	tests := []struct {
		name       string
		break_, ok func()
		wantReason string
	}{
		{"branch deleted", func() {
			repo.Git("push", "--quiet", "origin", "HEAD:refs/heads/keep")
			repo.Git("--git-dir", repo.Bare, "update-ref", "-d", "refs/heads/main")
		}, func() { repo.Push() }, "main: ref not found on remote"},
		{"remote unreachable", srv.Stop, srv.Start, "connection "}, // refused, or reset for a kept-alive connection
	}
	for _, tt := range tests {
		tt.break_()
		for range 2 {
			s, err := ctl.SyncNow(ctx)
			if err == nil {
				t.Errorf("%s: SyncNow succeeded", tt.name)
			}
			if s.Healthy || !strings.Contains(s.Reason, tt.wantReason) || !strings.HasPrefix(s.Reason, "the last fetch of the policy source failed") {
				t.Errorf("%s: healthy=%v reason=%q, want unhealthy with %q", tt.name, s.Healthy, s.Reason, tt.wantReason)
			}
		}
		if v := gauge(t, reg, "vigo_policy_source_healthy"); v != 0 {
			t.Errorf("%s: vigo_policy_source_healthy = %v, want 0", tt.name, v)
		}
		tt.ok()
		if s, err := ctl.SyncNow(ctx); err != nil || !s.Healthy {
			t.Errorf("%s: after repair: %v %+v", tt.name, err, s)
		}
	}
	if n := audits(store.AuditPolicyFetchFailed); n != 2 {
		t.Errorf("%d policy.fetch_failed events, want 2 (one per outage)", n)
	}
	if n := audits(store.AuditPolicyFetchRecovered); n != 2 {
		t.Errorf("%d policy.fetch_recovered events, want 2", n)
	}
}

// TestTreeProblemsRefuseTheRevision: a file tree that breaks the tree rules
// (here a .cue file in a subfolder) is refused like an invalid policy —
// audited, unhealthy, remembered — while files that are not policy (a docs
// symlink, a README) change nothing.
func TestTreeProblemsRefuseTheRevision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, gitsync.VerifyConfig{})
	good := f.push(t, validPolicy, "good")
	f.repo.WriteFiles(map[string]string{"policy/README.md": "# policy"})
	f.repo.Symlink("policy/docs/INDEX.md", "../README.md")
	docs := f.repo.Commit(nil, "docs")
	f.repo.Push()
	if s, err := f.ctl.SyncNow(ctx); err != nil || !s.Healthy || s.Active.Revision != docs {
		t.Fatalf("docs commit: %v %+v (good was %s)", err, s, good)
	}
	bad := f.repo.Commit(map[string]string{"policy/teams/web.cue": validPolicy2}, "nested")
	f.repo.Push()
	s, err := f.ctl.SyncNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []apiv1.PolicyError{{File: "teams/web.cue", Message: "a .cue file in a subfolder is not part of the policy: move it to the top of the policy folder, or rename it if it is not policy"}}
	if s.Healthy || s.Attempted.Revision != bad || s.Attempted.Valid || s.Attempted.Kind != "invalid" || s.Active.Revision != docs {
		t.Errorf("status = %+v", s)
	}
	if fmt.Sprint(s.Attempted.Errors) != fmt.Sprint(want) {
		t.Errorf("errors = %+v, want %+v", s.Attempted.Errors, want)
	}
	if r := f.audit(t, store.AuditPolicyRejected); len(r) != 1 || r[0].Revision != bad {
		t.Errorf("policy.rejected = %+v", r)
	}
}
