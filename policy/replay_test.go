package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestReplay decides past attempts again: enrollments the new policy
// refuses, refusals it admits, tokens, and what the base policy already
// changed.
func TestReplay(t *testing.T) {
	t.Parallel()
	base := mustLoad(t, `package policy
trusted_enrollment: [{name: "lan", pattern: "*.lan.test", cidrs: ["10.0.0.0/8"]}]
approved: ["*.web.test", "old.test"]
revocations: []
`)
	head := mustLoad(t, `package policy
trusted_enrollment: [{name: "lan", pattern: "*.lan.test", cidrs: ["10.0.0.0/8"]}]
approved: ["*.stage.test"]
revocations: [{hostname: "tok.example.com", reason: "stolen"}]
`)
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	ip := netip.MustParseAddr
	attempts := []Attempt{
		{ID: 9, At: at, Hostname: "a.web.test", SourceIP: ip("203.0.113.1"), Admitted: true, Rule: `approved "*.web.test"`},
		{ID: 8, At: at, Hostname: "A.web.test.", SourceIP: ip("203.0.113.1"), Admitted: true, Rule: `approved "*.web.test"`},
		{ID: 7, At: at, Hostname: "b.web.test", SourceIP: ip("203.0.113.2"), Admitted: true, Rule: `approved "*.web.test"`},
		{ID: 6, At: at, Hostname: "x.stage.test", SourceIP: ip("203.0.113.3")},
		{ID: 5, At: at, Hostname: "db.lan.test", SourceIP: ip("10.1.1.1"), Admitted: true, Rule: `trusted_enrollment "lan"`},
		{ID: 4, At: at, Hostname: "db.lan.test", SourceIP: ip("192.0.2.1")},
		{ID: 3, At: at, Hostname: "laptop.test", SourceIP: ip("192.0.2.1"), Admitted: true, Token: true, Rule: "token abc"},
		{ID: 2, At: at, Hostname: "tok.example.com", SourceIP: ip("192.0.2.1"), Admitted: true, Token: true, Rule: "token def"},
		{ID: 1, At: at, Hostname: "old.test", SourceIP: ip("192.0.2.1"), Admitted: true, Rule: `approved "old.test"`},
	}
	// The attempt admitted by "old.test" was admitted by an older policy;
	// base still approves it. Take a base without it to mark InBase.
	baseNoOld := mustLoad(t, `package policy
trusted_enrollment: [{name: "lan", pattern: "*.lan.test", cidrs: ["10.0.0.0/8"]}]
approved: ["*.web.test"]
`)
	for _, c := range []struct {
		name   string
		base   *Policy
		inBase map[int64]bool
	}{
		{"against base", base, map[int64]bool{}},
		{"old.test already gone in base", baseNoOld, map[int64]bool{1: true}},
		{"no base", nil, map[int64]bool{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := Replay(c.base, head, attempts)
			if r.Attempts != 9 || r.Hosts != 7 {
				t.Errorf("Attempts, Hosts = %d, %d, want 9, 7", r.Attempts, r.Hosts)
			}
			ids := func(cs []ReplayChange) []int64 {
				var out []int64
				for _, x := range cs {
					out = append(out, x.Attempt.ID)
				}
				return out
			}
			if d := cmp.Diff([]int64{9, 8, 7, 2, 1}, ids(r.NowRefused)); d != "" {
				t.Errorf("NowRefused (-want +got):\n%s", d)
			}
			if d := cmp.Diff([]int64{6}, ids(r.NowAdmitted)); d != "" {
				t.Errorf("NowAdmitted (-want +got):\n%s", d)
			}
			for _, x := range append(r.NowRefused, r.NowAdmitted...) {
				if x.InBase != c.inBase[x.Attempt.ID] {
					t.Errorf("attempt %d: InBase = %v, want %v", x.Attempt.ID, x.InBase, c.inBase[x.Attempt.ID])
				}
			}
			if got := r.NowRefused[3].Now.Rule; got != "revocations[0]" {
				t.Errorf("a revoked token holder: rule %q, want revocations[0]", got)
			}
			if got := r.NowAdmitted[0].Now.Rule; got != `approved "*.stage.test"` {
				t.Errorf("now admitted by %q", got)
			}
			first, n := Hostnames(r.NowRefused, 2)
			if d := cmp.Diff([]string{"a.web.test", "b.web.test"}, first); d != "" || n != 4 {
				t.Errorf("Hostnames = %v, %d; want [a.web.test b.web.test], 4 (%s)", first, n, d)
			}
		})
	}
}
