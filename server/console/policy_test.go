package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/console"
	"github.com/vigo-enroll/vigo/server/store"
)

const testPolicy = `package policy

trusted_enrollment: [{name: "office", pattern: "*.office.example.com", cidrs: ["10.1.0.0/16"]}]
approved: ["*.web.example.com", "db?.example.com"]
cert_validity: "720h"
revocations: [{hostname: "old.web.example.com", reason: "disk stolen"}]
tokens: max_ttl: "48h"
`

// fakeCtl is a policy controller's status and history.
type fakeCtl struct{ st apiv1.PolicyStatus }

func (f fakeCtl) Status() apiv1.PolicyStatus { return f.st }
func (f fakeCtl) History(context.Context, int) ([]apiv1.PolicyHistoryEntry, error) {
	return []apiv1.PolicyHistoryEntry{{Revision: "rev1", Subject: "Trust the office", Author: "Ada"}}, nil
}

// TestPolicyPage: the active policy's rules with their positions, the
// explain form deciding with it, and a refused revision's errors.
func TestPolicyPage(t *testing.T) {
	p, err := policy.Load([]policy.File{{Name: "main.cue", Data: []byte(testPolicy)}}, "rev1")
	if err != nil {
		t.Fatal(err)
	}
	ctl := fakeCtl{apiv1.PolicyStatus{Source: "git:https://git.example/policy", Healthy: false, Reason: "revision rev2 is invalid",
		Active: &apiv1.PolicyActive{Revision: "rev1", Subject: "Trust the office", Author: "Ada", AppliedAt: t0},
		Attempted: &apiv1.PolicyAttempt{Revision: "rev2", At: t0.Add(time.Hour), Kind: "invalid", Errors: []apiv1.PolicyError{
			{File: "team/web.cue", Line: 3, Col: 14, Path: "approved[2]", Message: `invalid glob "a[b": '[' is not allowed`}}},
		Conditions: []apiv1.Condition{{Type: apiv1.ConditionReady, Status: "False", Reason: "ValidationFailed", Message: "rev2 refused"}}}}
	f := newFixture(t, func(c *console.Config) {
		c.Policy = func() *policy.Policy { return p }
		c.PolicyCtl = ctl
	})
	c := f.client()
	c.signIn(adminSecret)
	resp, body := c.get("/ui/policy")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	for _, want := range []string{
		"team/web.cue:3:14: approved[2]: invalid glob &#34;a[b&#34;: &#39;[&#39; is not allowed", // the refusal, positioned
		`<code>*.office.example.com</code>`, `<code>10.1.0.0/16</code>`, "main.cue:3:", // trusted, with its position
		`<code>*.web.example.com</code>`, `<code>db?.example.com</code>`,
		"old.web.example.com", "disk stolen",
		"720h", "48h",
		"Trust the office", "by Ada",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("policy page lacks %q", want)
		}
	}
	tests := []struct {
		hostname, ip string
		want         string
	}{
		{"a.office.example.com", "10.1.2.3", `Allowed</strong> by trusted, rule <code>trusted_enrollment &#34;office&#34;</code>`},
		{"a.office.example.com", "192.0.2.1", `Denied</strong>`},
		{"shop.web.example.com", "", `Allowed</strong> by approved, rule <code>approved &#34;*.web.example.com&#34;</code>`},
		{"old.web.example.com", "10.1.2.3", `Denied</strong>, rule <code>revocations[0]</code>: hostname old.web.example.com is revoked by policy: disk stolen`},
	}
	for _, tc := range tests {
		t.Run(tc.hostname+" from "+tc.ip, func(t *testing.T) {
			resp, body := c.get("/ui/policy?" + url.Values{"hostname": {tc.hostname}, "ip": {tc.ip}}.Encode())
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, tc.want) {
				i := strings.Index(body, `id="decision"`)
				t.Errorf("HTTP %d, want %q in the decision:\n%s", resp.StatusCode, tc.want, body[max(i, 0):min(len(body), max(i, 0)+600)])
			}
		})
	}
	// Explaining enrolls nothing and writes no audit event.
	if n, _ := f.store.CountEnvoys(t.Context(), store.EnvoyQuery{}); n != 0 {
		t.Errorf("%d envoys after explaining", n)
	}
}

// TestPolicyPageBoundsRules: a policy of thousands of patterns shows the
// first MaxRules and says how many more there are.
func TestPolicyPageBoundsRules(t *testing.T) {
	var b strings.Builder
	b.WriteString("package policy\n\napproved: [\n")
	for i := range console.MaxRules + 20 {
		fmt.Fprintf(&b, "\t\"h%d.example.com\",\n", i)
	}
	b.WriteString("]\n")
	p, err := policy.Load([]policy.File{{Name: "policy.cue", Data: []byte(b.String())}}, "big")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *console.Config) { c.Policy = func() *policy.Policy { return p } })
	c := f.client()
	c.signIn(adminSecret)
	_, body := c.get("/ui/policy")
	if !strings.Contains(body, fmt.Sprintf("Approved patterns (%d + 20 more)", console.MaxRules)) {
		t.Error("the page does not bound the list of approved patterns")
	}
	if n := strings.Count(body, ".example.com</code>"); n != console.MaxRules {
		t.Errorf("%d patterns shown, want %d", n, console.MaxRules)
	}
}
