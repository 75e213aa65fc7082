package feedback_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/delivery"
	"github.com/vigo-enroll/vigo/server/feedback"
	"github.com/vigo-enroll/vigo/server/feedback/feedbacktest"
	"github.com/vigo-enroll/vigo/server/policyctl"
)

const sha = "0123456789abcdef0123456789abcdef01234567"

func run(t *testing.T, p *feedback.Poster) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitStatuses(t *testing.T, f *feedbacktest.Forge, n int) []feedbacktest.Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(f.Statuses()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d statuses, want %d: %+v", len(f.Statuses()), n, f.Statuses())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f.Statuses()
}

// TestForges posts pending, failure and success to each forge's API as it
// is documented, and retries a forge that is briefly unavailable.
func TestForges(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{feedback.GitHub, feedback.GitLab, feedback.Gitea} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			forge := feedbacktest.New(t, "forge-token")
			repo := "example/enrollment-policy"
			if kind == feedback.GitLab {
				repo = "infra/policies/enrollment"
			}
			p, err := feedback.New(feedback.Config{Kind: kind, APIURL: forge.APIURL(kind), Repository: repo, Token: "forge-token",
				Replica: "vigo-1", TargetURL: "https://vigo.example.com/ui/policy", Limits: delivery.Limits{Backoff: time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			run(t, p)
			forge.Fail(2) // the first status is retried twice
			long := strings.Repeat("x", 300)
			p.Handle(policyctl.Event{Type: policyctl.EventEvaluating, Revision: sha})
			p.Handle(policyctl.Event{Type: policyctl.EventRefused, Revision: sha,
				Errors: []apiv1.PolicyError{{File: "approved.cue", Line: 7, Col: 2, Message: long}}})
			p.Handle(policyctl.Event{Type: policyctl.EventApplied, Revision: sha})
			p.Handle(policyctl.Event{Type: policyctl.EventApplied, Revision: "local@sha256:abc"}) // not a commit
			other := strings.Repeat("f", 40)
			p.Handle(policyctl.Event{Type: policyctl.EventApplied, Revision: other}) // a marker: posted after the rest
			got := waitStatuses(t, forge, 4)
			pending, failed := "pending", "failure"
			if kind == feedback.GitLab {
				pending, failed = "running", "failed"
			}
			want := []struct{ state, desc string }{
				{pending, "evaluating on vigo-1"},
				{failed, "refused by vigo-1: approved.cue:7: xxx"},
				{"success", "applied by vigo-1"},
			}
			for i, w := range want {
				s := got[i]
				if s.Repository != repo || s.SHA != sha || s.Context != feedback.DefaultContext || s.State != w.state ||
					!strings.HasPrefix(s.Description, w.desc) || s.TargetURL != "https://vigo.example.com/ui/policy" {
					t.Errorf("status %d = %+v, want %s %q…", i, s, w.state, w.desc)
				}
			}
			if got[3].SHA != other {
				t.Errorf("status 3 = %+v, want the marker (a folder revision is not a commit)", got[3])
			}
		})
	}
}

func TestAppliedElsewhereSkipsPending(t *testing.T) {
	t.Parallel()
	forge := feedbacktest.New(t, "tok")
	p, err := feedback.New(feedback.Config{Kind: feedback.GitHub, APIURL: forge.APIURL("github"), Repository: "o/r", Token: "tok",
		Replica: "vigo-2", AppliedElsewhere: func(string) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	run(t, p)
	p.Handle(policyctl.Event{Type: policyctl.EventEvaluating, Revision: sha})
	p.Handle(policyctl.Event{Type: policyctl.EventApplied, Revision: sha})
	got := waitStatuses(t, forge, 1)
	if got[0].State != "success" || got[0].Description != "applied by vigo-2" {
		t.Errorf("statuses %+v, want only success (another replica applied it first)", got)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []feedback.Config{
		{Kind: "bitbucket", Repository: "o/r", Token: "t"},
		{Kind: "gitea", Repository: "o/r", Token: "t"},
		{Kind: "github", Repository: "just-a-name", Token: "t"},
		{Kind: "github", Repository: "o/r"},
		{Kind: "github", APIURL: "ftp://x", Repository: "o/r", Token: "t"},
	} {
		if _, err := feedback.New(c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
}

func TestRepositoryFromURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://github.com/example/policy.git":     "example/policy",
		"https://gitlab.com/infra/sub/policy":       "infra/sub/policy",
		"ssh://git@github.com/example/policy.git":   "example/policy",
		"git@github.com:example/policy.git":         "example/policy",
		"https://x-access-token@github.com/o/r.git": "o/r",
	} {
		if got := feedback.RepositoryFromURL(in); got != want {
			t.Errorf("RepositoryFromURL(%q) = %q, want %q", in, got, want)
		}
	}
}
