package policy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const decidePolicy = `package policy

trusted_enrollment: [
	{name: "dc1", pattern: "*.dc1.example.com", cidrs: ["10.10.0.0/16", "fd00:10::/48"]},
	{pattern: "runner-??.ci.example.com", cidrs: ["192.0.2.0/26"]},
	{name: "lab-any", pattern: "*", cidrs: ["172.16.0.0/12"]},
	{name: "dc1-second", pattern: "*.dc1.example.com", cidrs: ["10.0.0.0/8"]},
	{name: "mid", pattern: "app-*-db.example.com", cidrs: ["10.99.0.0/16"]},
]
approved: [
	"web1.example.com",
	"*.web.example.com",
	"edge-?.cdn.example.com",
	"build*",
	"*.dev.*",
	"*.dc1.example.com.approved.test",
	"db?.example.com",
]
revocations: [
	{hostname: "db1.example.com", reason: "decommissioned"},
	{hostname: "old.dc1.example.com", reason: "stolen"},
	{uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", reason: "lost"},
]
`

func mustLoad(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Load([]File{{Name: "policy.cue", Data: []byte(src)}}, "rev1")
	if err != nil {
		t.Fatalf("Load:\n%v", err)
	}
	return p
}

func TestDecide(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, decidePolicy)
	ip := netip.MustParseAddr
	tok := func(pattern string) *TokenInfo { return &TokenInfo{ID: "tok1", Pattern: pattern} }
	tests := []struct {
		name string
		req  Request
		want Decision
	}{
		{
			name: "trusted IPv4",
			req:  Request{Hostname: "app.dc1.example.com", SourceIP: ip("10.10.3.4")},
			want: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "dc1"`,
				Reason: `app.dc1.example.com matches trusted_enrollment "dc1" (pattern *.dc1.example.com) and 10.10.3.4 is in its CIDRs`},
		},
		{
			name: "trusted IPv6",
			req:  Request{Hostname: "app.dc1.example.com", SourceIP: ip("fd00:10::5")},
			want: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "dc1"`,
				Reason: `app.dc1.example.com matches trusted_enrollment "dc1" (pattern *.dc1.example.com) and fd00:10::5 is in its CIDRs`},
		},
		{
			name: "trusted IPv4-mapped IPv6 source",
			req:  Request{Hostname: "app.dc1.example.com", SourceIP: ip("::ffff:10.10.3.4")},
			want: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "dc1"`,
				Reason: `app.dc1.example.com matches trusted_enrollment "dc1" (pattern *.dc1.example.com) and 10.10.3.4 is in its CIDRs`},
		},
		{
			name: "second trusted entry with the same pattern",
			req:  Request{Hostname: "app.dc1.example.com", SourceIP: ip("10.20.0.1")},
			want: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "dc1-second"`,
				Reason: `app.dc1.example.com matches trusted_enrollment "dc1-second" (pattern *.dc1.example.com) and 10.20.0.1 is in its CIDRs`},
		},
		{
			name: "first matching trusted entry wins",
			req:  Request{Hostname: "app.dc1.example.com", SourceIP: ip("172.16.1.1")},
			want: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "lab-any"`,
				Reason: `app.dc1.example.com matches trusted_enrollment "lab-any" (pattern *) and 172.16.1.1 is in its CIDRs`},
		},
		{
			name: "unnamed trusted entry with ?",
			req:  Request{Hostname: "runner-07.ci.example.com", SourceIP: ip("192.0.2.1")},
			want: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment[1]`,
				Reason: `runner-07.ci.example.com matches trusted_enrollment[1] (pattern runner-??.ci.example.com) and 192.0.2.1 is in its CIDRs`},
		},
		{
			name: "star in the middle",
			req:  Request{Hostname: "app-eu-1-db.example.com", SourceIP: ip("10.99.1.1")},
			want: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "mid"`,
				Reason: `app-eu-1-db.example.com matches trusted_enrollment "mid" (pattern app-*-db.example.com) and 10.99.1.1 is in its CIDRs`},
		},
		{
			name: "trusted hostname from the wrong network is denied",
			req:  Request{Hostname: "runner-07.ci.example.com", SourceIP: ip("203.0.113.5")},
			want: Decision{Reason: `no rule allows runner-07.ci.example.com from 203.0.113.5: not in approved, trusted_enrollment[1] matches this hostname but 203.0.113.5 is not in its CIDRs, and no token was given`},
		},
		{
			name: "? matches exactly one character",
			req:  Request{Hostname: "runner-107.ci.example.com", SourceIP: ip("192.0.2.1")},
			want: Decision{Reason: `no rule allows runner-107.ci.example.com from 192.0.2.1: not in approved, trusted_enrollment "lab-any" matches this hostname but 192.0.2.1 is not in its CIDRs, and no token was given`},
		},
		{
			name: "approved exact",
			req:  Request{Hostname: "web1.example.com", SourceIP: ip("203.0.113.5")},
			want: Decision{Allowed: true, Method: "approved", Rule: `approved "web1.example.com"`, Reason: `web1.example.com matches approved pattern web1.example.com`},
		},
		{
			name: "upper case and trailing dot",
			req:  Request{Hostname: "WEB1.Example.COM.", SourceIP: ip("2001:db8::1")},
			want: Decision{Allowed: true, Method: "approved", Rule: `approved "web1.example.com"`, Reason: `web1.example.com matches approved pattern web1.example.com`},
		},
		{
			name: "star at the start matches several labels",
			req:  Request{Hostname: "a.b.web.example.com", SourceIP: ip("203.0.113.5")},
			want: Decision{Allowed: true, Method: "approved", Rule: `approved "*.web.example.com"`, Reason: `a.b.web.example.com matches approved pattern *.web.example.com`},
		},
		{
			name: "star at the end",
			req:  Request{Hostname: "build-17.example.org", SourceIP: ip("203.0.113.5")},
			want: Decision{Allowed: true, Method: "approved", Rule: `approved "build*"`, Reason: `build-17.example.org matches approved pattern build*`},
		},
		{
			name: "stars at both ends",
			req:  Request{Hostname: "x.dev.example.com", SourceIP: ip("203.0.113.5")},
			want: Decision{Allowed: true, Method: "approved", Rule: `approved "*.dev.*"`, Reason: `x.dev.example.com matches approved pattern *.dev.*`},
		},
		{
			name: "? in approved",
			req:  Request{Hostname: "edge-3.cdn.example.com", SourceIP: ip("203.0.113.5")},
			want: Decision{Allowed: true, Method: "approved", Rule: `approved "edge-?.cdn.example.com"`, Reason: `edge-3.cdn.example.com matches approved pattern edge-?.cdn.example.com`},
		},
		{
			name: "trusted before approved",
			req:  Request{Hostname: "web1.example.com", SourceIP: ip("172.16.0.9")},
			want: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "lab-any"`,
				Reason: `web1.example.com matches trusted_enrollment "lab-any" (pattern *) and 172.16.0.9 is in its CIDRs`},
		},
		{
			name: "approved before token",
			req:  Request{Hostname: "web1.example.com", SourceIP: ip("203.0.113.5"), Token: tok("web1.example.com")},
			want: Decision{Allowed: true, Method: "approved", Rule: `approved "web1.example.com"`, Reason: `web1.example.com matches approved pattern web1.example.com`},
		},
		{
			name: "token",
			req:  Request{Hostname: "laptop.example.com", SourceIP: ip("203.0.113.5"), Token: tok("*.EXAMPLE.com")},
			want: Decision{Allowed: true, Method: "token", Rule: "token tok1", Reason: `token tok1 is bound to pattern *.example.com, which matches laptop.example.com`},
		},
		{
			name: "token with another pattern",
			req:  Request{Hostname: "laptop.example.com", SourceIP: ip("203.0.113.5"), Token: tok("web3.example.com")},
			want: Decision{Reason: `no rule allows laptop.example.com from 203.0.113.5: not in approved, trusted_enrollment "lab-any" matches this hostname but 203.0.113.5 is not in its CIDRs, and token tok1 is bound to pattern web3.example.com, which does not match laptop.example.com`},
		},
		{
			name: "revoked before trusted, approved and token",
			req:  Request{Hostname: "db1.example.com", SourceIP: ip("172.16.0.1"), Token: tok("db1.example.com")},
			want: Decision{Rule: "revocations[0]", Reason: `hostname db1.example.com is revoked by policy: decommissioned`},
		},
		{
			name: "revoked hostname in upper case",
			req:  Request{Hostname: "OLD.dc1.example.com.", SourceIP: ip("10.10.0.1")},
			want: Decision{Rule: "revocations[1]", Reason: `hostname old.dc1.example.com is revoked by policy: stolen`},
		},
		{
			name: "revocation is by exact name",
			req:  Request{Hostname: "db2.example.com", SourceIP: ip("203.0.113.5")},
			want: Decision{Allowed: true, Method: "approved", Rule: `approved "db?.example.com"`, Reason: `db2.example.com matches approved pattern db?.example.com`},
		},
		{
			name: "no match",
			req:  Request{Hostname: "web9.example.com", SourceIP: ip("203.0.113.5")},
			want: Decision{Reason: `no rule allows web9.example.com from 203.0.113.5: not in approved, trusted_enrollment "lab-any" matches this hostname but 203.0.113.5 is not in its CIDRs, and no token was given`},
		},
		{
			name: "suffix must start at a label",
			req:  Request{Hostname: "xweb.example.com", SourceIP: ip("203.0.113.5")},
			want: Decision{Reason: `no rule allows xweb.example.com from 203.0.113.5: not in approved, trusted_enrollment "lab-any" matches this hostname but 203.0.113.5 is not in its CIDRs, and no token was given`},
		},
		{
			name: "no source address",
			req:  Request{Hostname: "app.dc1.example.com"},
			want: Decision{Reason: `no rule allows app.dc1.example.com from an unknown source address: not in approved, trusted_enrollment "dc1" matches this hostname but an unknown source address is not in its CIDRs, and no token was given`},
		},
		{
			name: "invalid hostname",
			req:  Request{Hostname: "web_1.example.com", SourceIP: ip("172.16.0.1")},
			want: Decision{Reason: `invalid hostname: hostname "web_1.example.com": label "web_1" has invalid character '_'`},
		},
		{
			name: "empty hostname",
			req:  Request{Hostname: "", SourceIP: ip("172.16.0.1")},
			want: Decision{Reason: `invalid hostname: hostname is empty`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.want.Revision = "rev1"
			if diff := cmp.Diff(tt.want, p.Decide(tt.req), ignoreReplace); diff != "" {
				t.Errorf("Decide(%+v) (-want +got):\n%s", tt.req, diff)
			}
		})
	}
}

func TestDecideNilPolicy(t *testing.T) {
	t.Parallel()
	var p *Policy
	src := netip.MustParseAddr("10.0.0.1")
	tests := []struct {
		name string
		req  Request
		want Decision
	}{
		{
			name: "token allowed",
			req:  Request{Hostname: "web3.example.com", SourceIP: src, Token: &TokenInfo{ID: "t1", Pattern: "web3.example.com"}},
			want: Decision{Allowed: true, Method: "token", Rule: "token t1", Reason: "token t1 is bound to pattern web3.example.com, which matches web3.example.com"},
		},
		{
			name: "no token",
			req:  Request{Hostname: "web3.example.com", SourceIP: src},
			want: Decision{Reason: "no valid enrollment policy has been loaded yet: web3.example.com can enroll only with a token, and no token was given"},
		},
		{
			name: "token for another host",
			req:  Request{Hostname: "web3.example.com", SourceIP: src, Token: &TokenInfo{ID: "t1", Pattern: "web4.example.com"}},
			want: Decision{Reason: "no valid enrollment policy has been loaded yet: web3.example.com can enroll only with a token, and token t1 is bound to pattern web4.example.com, which does not match web3.example.com"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, p.Decide(tt.req), ignoreReplace); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if p.CertValidity() != DefaultCertValidity || p.TokenMaxTTL() != 0 || p.Revocations() != nil || p.Revision() != "" {
		t.Errorf("nil Policy accessors do not return defaults")
	}
}

// TestDecideReasons checks the reasons operators see, on a policy without a
// catch-all trusted entry.
func TestDecideReasons(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, `package policy
approved: ["web1.example.com"]
revocations: [{hostname: "db1.example.com", reason: "decommissioned"}]
`)
	tests := []struct {
		name, host, want string
	}{
		{"denied", "web9.example.com", "no rule allows web9.example.com from 203.0.113.5: not in approved, no trusted_enrollment entry matches this hostname and source, and no token was given"},
		{"revoked", "db1.example.com", "hostname db1.example.com is revoked by policy: decommissioned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := p.Decide(Request{Hostname: tt.host, SourceIP: netip.MustParseAddr("203.0.113.5")})
			if d.Allowed || d.Reason != tt.want {
				t.Errorf("Decide(%s) = %+v, want denied with reason %q", tt.host, d, tt.want)
			}
		})
	}
}

// ignoreReplace leaves Decision.Replace to TestDecideReplace.
var ignoreReplace = cmpopts.IgnoreFields(Decision{}, "Replace")

// TestDecideReplace: an allowed decision carries who may replace an active
// envoy, from the rule (default any); a token always may.
func TestDecideReplace(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, `package policy

trusted_enrollment: [
	{name: "lab", pattern: "*.lab.example.com", cidrs: ["10.0.0.0/8"], replace: "token"},
	{name: "dc", pattern: "*.dc.example.com", cidrs: ["10.0.0.0/8"]},
]
approved: [{pattern: "*.web.example.com", replace: "proof"}, "db1.example.com"]
approved_by_owner: ops: [{pattern: "*.ops.example.com", replace: "token"}]
`)
	ip := netip.MustParseAddr("10.1.2.3")
	for host, want := range map[string]string{
		"a.lab.example.com": ReplaceToken, "a.dc.example.com": ReplaceAny, "a.web.example.com": ReplaceProof,
		"db1.example.com": ReplaceAny, "x.ops.example.com": ReplaceToken,
	} {
		if d := p.Decide(Request{Hostname: host, SourceIP: ip}); !d.Allowed || d.Replace != want {
			t.Errorf("Decide(%s) = %+v, want allowed with replace %q", host, d, want)
		}
	}
	d := p.DecideToken("a.web.example.com", &TokenInfo{ID: "t1", Pattern: "*.web.example.com"})
	if !d.Allowed || d.Method != MethodToken || d.Replace != ReplaceAny {
		t.Errorf("DecideToken = %+v, want allowed by the token, replace any", d)
	}
	if d := p.DecideToken("a.web.example.com", &TokenInfo{ID: "t2", Pattern: "other.example.com"}); d.Allowed {
		t.Errorf("DecideToken with another pattern = %+v, want denied", d)
	}
}
