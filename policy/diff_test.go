package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var diffOpts = cmp.Options{
	cmpopts.IgnoreUnexported(Changes{}),
	cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{}),
	cmpopts.EquateEmpty(),
	ignoreReplace,
}

const diffBase = `package policy

trusted_enrollment: [
	{name: "dc1", pattern: "*.dc1.example.com", cidrs: ["10.10.0.0/16", "fd00:10::/48"]},
	{name: "ci", pattern: "runner-??.ci.example.com", cidrs: ["192.0.2.0/26"]},
	{pattern: "ws-*.office.example.com", cidrs: ["198.51.100.0/24"]},
]
approved: ["*.web.example.com", "monitor1.example.com"]
revocations: [
	{hostname: "db1.dc1.example.com", reason: "decommissioned"},
	{uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", reason: "lost"},
]
cert_validity: "2160h"
tokens: max_ttl: "168h"
tests: [
	{hostname: "app.dc1.example.com", ip: "10.10.0.7", expect: "trusted"},
	{hostname: "shop.web.example.com", ip: "203.0.113.9", expect: "approved"},
]
`

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestDiff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		old, new string
		want     Changes
	}{
		{
			name: "unchanged",
			old:  diffBase,
			new:  diffBase,
		},
		{
			name: "same policy written differently",
			old:  diffBase,
			new: `package policy

_dc1: ["10.10.0.0/16", "fd00:10::/48"]
trusted_enrollment: [
	{name: "dc1", pattern: "*.DC1.example.com.", cidrs: _dc1},
	{name: "ci", pattern: "runner-??.ci.example.com", cidrs: ["192.0.2.0/26"]},
	{pattern: "ws-*.office.example.com", cidrs: ["198.51.100.0/24"]},
]
approved: ["monitor1.example.com", "*.web.example.com"]
revocations: [
	{uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", reason: "lost"},
	{hostname: "DB1.dc1.example.com", reason: "decommissioned"},
]
cert_validity: "2160h"
tokens: max_ttl: "168h"
`,
		},
		{
			name: "entries added and removed",
			old:  diffBase,
			new: `package policy

trusted_enrollment: [
	{name: "dc1", pattern: "*.dc1.example.com", cidrs: ["10.10.0.0/16", "fd00:10::/48"]},
	{name: "dc2", pattern: "*.dc2.example.com", cidrs: ["10.20.0.0/16"]},
]
approved: ["*.web.example.com", "edge-?.cdn.example.com"]
revocations: [
	{hostname: "db1.dc1.example.com", reason: "decommissioned"},
	{uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", reason: "lost"},
	{hostname: "web7.web.example.com", uuid: "11111111-2222-4333-8444-555555555555", reason: "compromised"},
]
cert_validity: "2160h"
tokens: max_ttl: "168h"
`,
			want: Changes{
				Added: Entries{
					Trusted:     []TrustedEntry{{Name: "dc2", Pattern: "*.dc2.example.com", CIDRs: pfx("10.20.0.0/16")}},
					Approved:    []string{"edge-?.cdn.example.com"},
					Revocations: []Revocation{{UUID: "11111111-2222-4333-8444-555555555555", Hostname: "web7.web.example.com", Reason: "compromised"}},
				},
				Removed: Entries{
					Trusted: []TrustedEntry{
						{Name: "ci", Pattern: "runner-??.ci.example.com", CIDRs: pfx("192.0.2.0/26")},
						{Pattern: "ws-*.office.example.com", CIDRs: pfx("198.51.100.0/24")},
					},
					Approved: []string{"monitor1.example.com"},
				},
			},
		},
		{
			name: "changed CIDRs, pattern, settings and revocation reason",
			old:  diffBase,
			new: `package policy

trusted_enrollment: [
	{name: "dc1", pattern: "*.dc1.example.com", cidrs: ["10.10.0.0/16", "10.11.0.0/16"]},
	{name: "ci", pattern: "runner-???.ci.example.com", cidrs: ["192.0.2.0/26"]},
	{pattern: "ws-*.office.example.com", cidrs: ["198.51.100.0/25"]},
]
approved: ["*.web.example.com", "monitor1.example.com"]
revocations: [
	{hostname: "db1.dc1.example.com", reason: "decommissioned (CHG-1)"},
	{uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", hostname: "lost.example.com", reason: "lost"},
]
cert_validity: "720h"
`,
			want: Changes{Changed: Changed{
				Trusted: []TrustedChange{
					{
						Old:          TrustedEntry{Name: "dc1", Pattern: "*.dc1.example.com", CIDRs: pfx("10.10.0.0/16", "fd00:10::/48")},
						New:          TrustedEntry{Name: "dc1", Pattern: "*.dc1.example.com", CIDRs: pfx("10.10.0.0/16", "10.11.0.0/16")},
						CIDRsAdded:   pfx("10.11.0.0/16"),
						CIDRsRemoved: pfx("fd00:10::/48"),
					},
					{
						Old: TrustedEntry{Name: "ci", Pattern: "runner-??.ci.example.com", CIDRs: pfx("192.0.2.0/26")},
						New: TrustedEntry{Name: "ci", Pattern: "runner-???.ci.example.com", CIDRs: pfx("192.0.2.0/26")},
					},
					{
						Old:          TrustedEntry{Pattern: "ws-*.office.example.com", CIDRs: pfx("198.51.100.0/24")},
						New:          TrustedEntry{Pattern: "ws-*.office.example.com", CIDRs: pfx("198.51.100.0/25")},
						CIDRsAdded:   pfx("198.51.100.0/25"),
						CIDRsRemoved: pfx("198.51.100.0/24"),
					},
				},
				Revocations: []RevocationChange{
					{
						Old: Revocation{Hostname: "db1.dc1.example.com", Reason: "decommissioned"},
						New: Revocation{Hostname: "db1.dc1.example.com", Reason: "decommissioned (CHG-1)"},
					},
					{
						Old: Revocation{UUID: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", Reason: "lost"},
						New: Revocation{UUID: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", Hostname: "lost.example.com", Reason: "lost"},
					},
				},
				Settings: []SettingChange{
					{Setting: "cert_validity", Old: "2160h", New: "720h"},
					{Setting: "tokens.max_ttl", Old: "168h", New: "none"},
				},
			}},
		},
		{
			name: "entries inserted above others change no test decision",
			old: strings.Replace(diffBase, "tests: [", `tests: [
	{hostname: "ws-ann.office.example.com", ip: "198.51.100.4", expect: "trusted"},
	{hostname: "db1.dc1.example.com", ip: "10.10.0.1", expect: "deny"},`, 1),
			new: `package policy

trusted_enrollment: [
	{pattern: "*.lab.example.com", cidrs: ["172.16.0.0/12"]},
	{name: "dc1", pattern: "*.dc1.example.com", cidrs: ["10.10.0.0/16", "fd00:10::/48"]},
	{name: "ci", pattern: "runner-??.ci.example.com", cidrs: ["192.0.2.0/26"]},
	{pattern: "ws-*.office.example.com", cidrs: ["198.51.100.0/24"]},
]
approved: ["*.web.example.com", "monitor1.example.com"]
revocations: [
	{hostname: "old.example.com", reason: "retired"},
	{hostname: "db1.dc1.example.com", reason: "decommissioned"},
	{uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", reason: "lost"},
]
cert_validity: "2160h"
tokens: max_ttl: "168h"
`,
			want: Changes{Added: Entries{
				Trusted:     []TrustedEntry{{Pattern: "*.lab.example.com", CIDRs: pfx("172.16.0.0/12")}},
				Revocations: []Revocation{{Hostname: "old.example.com", Reason: "retired"}},
			}},
		},
		{
			name: "renamed entries",
			old:  diffBase,
			new: `package policy

trusted_enrollment: [
	{name: "dc1-servers", pattern: "*.dc1.example.com", cidrs: ["10.10.0.0/16", "fd00:10::/48"]},
	{pattern: "runner-??.ci.example.com", cidrs: ["192.0.2.0/26"]},
	{name: "office", pattern: "ws-*.office.example.com", cidrs: ["198.51.100.0/24"]},
]
approved: ["*.web.example.com", "monitor1.example.com"]
revocations: [
	{hostname: "db1.dc1.example.com", reason: "decommissioned"},
	{uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", reason: "lost"},
]
cert_validity: "2160h"
tokens: max_ttl: "168h"
tests: [
	{hostname: "app.dc1.example.com", ip: "10.10.0.7", expect: "trusted"},
]
`,
			want: Changes{
				Changed: Changed{Trusted: []TrustedChange{
					{
						Old: TrustedEntry{Name: "dc1", Pattern: "*.dc1.example.com", CIDRs: pfx("10.10.0.0/16", "fd00:10::/48")},
						New: TrustedEntry{Name: "dc1-servers", Pattern: "*.dc1.example.com", CIDRs: pfx("10.10.0.0/16", "fd00:10::/48")},
					},
					{
						Old: TrustedEntry{Name: "ci", Pattern: "runner-??.ci.example.com", CIDRs: pfx("192.0.2.0/26")},
						New: TrustedEntry{Pattern: "runner-??.ci.example.com", CIDRs: pfx("192.0.2.0/26")},
					},
					{
						Old: TrustedEntry{Pattern: "ws-*.office.example.com", CIDRs: pfx("198.51.100.0/24")},
						New: TrustedEntry{Name: "office", Pattern: "ws-*.office.example.com", CIDRs: pfx("198.51.100.0/24")},
					},
				}},
				// The rule recorded for the test's envoy changes name.
				TestChanges: []TestChange{{
					In: "new", File: "policy.cue", Line: 16, Col: 2,
					Hostname: "app.dc1.example.com", IP: "10.10.0.7", Expect: "trusted",
					Old: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "dc1"`, Revision: "old",
						Reason: `app.dc1.example.com matches trusted_enrollment "dc1" (pattern *.dc1.example.com) and 10.10.0.7 is in its CIDRs`},
					New: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "dc1-servers"`, Revision: "new",
						Reason: `app.dc1.example.com matches trusted_enrollment "dc1-servers" (pattern *.dc1.example.com) and 10.10.0.7 is in its CIDRs`},
				}},
			},
		},
		{
			name: "test decisions that change, from the new and the old tests",
			old:  diffBase,
			new: `package policy

trusted_enrollment: [
	{name: "dc1", pattern: "*.dc1.example.com", cidrs: ["10.10.0.0/16", "fd00:10::/48"]},
	{name: "ci", pattern: "runner-??.ci.example.com", cidrs: ["192.0.2.0/26"]},
	{pattern: "ws-*.office.example.com", cidrs: ["198.51.100.0/24"]},
]
approved: ["monitor1.example.com", "laptop.example.com"]
revocations: [
	{hostname: "db1.dc1.example.com", reason: "decommissioned"},
	{uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", reason: "lost"},
]
cert_validity: "2160h"
tokens: max_ttl: "168h"
tests: [
	{hostname: "laptop.example.com", ip: "203.0.113.9", expect: "approved"},
	{hostname: "app.dc1.example.com", ip: "10.10.0.7", expect: "trusted"},
]
`,
			want: Changes{
				Added:   Entries{Approved: []string{"laptop.example.com"}},
				Removed: Entries{Approved: []string{"*.web.example.com"}},
				TestChanges: []TestChange{
					{
						In: "new", File: "policy.cue", Line: 16, Col: 2,
						Hostname: "laptop.example.com", IP: "203.0.113.9", Expect: "approved",
						Old: Decision{Revision: "old",
							Reason: "no rule allows laptop.example.com from 203.0.113.9: not in approved, no trusted_enrollment entry matches this hostname and source, and no token was given"},
						New: Decision{Allowed: true, Method: "approved", Rule: `approved "laptop.example.com"`, Revision: "new",
							Reason: "laptop.example.com matches approved pattern laptop.example.com"},
					},
					{
						In: "old", File: "policy.cue", Line: 17, Col: 2,
						Hostname: "shop.web.example.com", IP: "203.0.113.9", Expect: "approved",
						Old: Decision{Allowed: true, Method: "approved", Rule: `approved "*.web.example.com"`, Revision: "old",
							Reason: "shop.web.example.com matches approved pattern *.web.example.com"},
						New: Decision{Revision: "new",
							Reason: "no rule allows shop.web.example.com from 203.0.113.9: not in approved, no trusted_enrollment entry matches this hostname and source, and no token was given"},
					},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			old, new := mustLoadRev(t, tt.old, "old"), mustLoadRev(t, tt.new, "new")
			got := Diff(old, new)
			if diff := cmp.Diff(tt.want, got, diffOpts); diff != "" {
				t.Errorf("Diff (-want +got):\n%s", diff)
			}
			if got.Empty() != (tt.want.Added.Len()+tt.want.Removed.Len()+tt.want.Changed.Len()+len(tt.want.TestChanges) == 0) {
				t.Errorf("Empty() = %v", got.Empty())
			}
		})
	}
}

func mustLoadRev(t testing.TB, src, rev string) *Policy {
	t.Helper()
	p := mustLoad(t, src)
	p.revision = rev
	return p
}

func TestDiffNil(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, `package policy
approved: ["a.example.com"]
tokens: max_ttl: "1h30m"
`)
	got := Diff(nil, p)
	want := Changes{
		Added:   Entries{Approved: []string{"a.example.com"}},
		Changed: Changed{Settings: []SettingChange{{Setting: "tokens.max_ttl", Old: "none", New: "1h30m"}}},
	}
	if diff := cmp.Diff(want, got, diffOpts); diff != "" {
		t.Errorf("Diff(nil, p) (-want +got):\n%s", diff)
	}
	if !Diff(nil, nil).Empty() {
		t.Errorf("Diff(nil, nil) is not empty")
	}
	if im := Diff(nil, p).Impact([]EnvoyRef{{UUID: "u", Hostname: "a.example.com"}}); len(im.Revokes)+len(im.NoLongerAdmitted) != 0 {
		t.Errorf("Impact of adding a rule = %+v, want nothing", im)
	}
}

func TestImpact(t *testing.T) {
	t.Parallel()
	old := mustLoadRev(t, diffBase, "old")
	new := mustLoadRev(t, `package policy

trusted_enrollment: [
	{name: "dc1", pattern: "*.dc1.example.com", cidrs: ["10.10.0.0/16"]},
	{name: "ws", pattern: "ws-*.office.example.com", cidrs: ["198.51.100.0/24"]},
]
approved: ["*.web.example.com", "runner-01.ci.example.com"]
revocations: [
	{hostname: "db1.dc1.example.com", reason: "decommissioned"},
	{uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", reason: "lost"},
	{uuid: "11111111-2222-4333-8444-555555555555", reason: "stolen laptop"},
	{hostname: "Shop.Web.Example.com", reason: "compromised"},
]
`, "new")
	ip := netip.MustParseAddr
	envoys := map[string]EnvoyRef{
		"by uuid":             {UUID: "11111111-2222-4333-8444-555555555555", Hostname: "app9.dc1.example.com", SourceIP: ip("10.10.0.9"), Rule: `trusted_enrollment "dc1"`},
		"by hostname":         {UUID: "aaaaaaaa-2222-4333-8444-555555555555", Hostname: "SHOP.web.example.com.", SourceIP: ip("203.0.113.9"), Rule: `approved "*.web.example.com"`},
		"already revoked":     {UUID: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", Hostname: "lost.example.com", Rule: "token t1"},
		"CIDR removed":        {UUID: "bbbbbbbb-2222-4333-8444-555555555555", Hostname: "app6.dc1.example.com", SourceIP: ip("fd00:10::6"), Rule: `trusted_enrollment "dc1"`},
		"still trusted":       {UUID: "cccccccc-2222-4333-8444-555555555555", Hostname: "app7.dc1.example.com", SourceIP: ip("10.10.0.7"), Rule: `trusted_enrollment "dc1"`},
		"rule removed":        {UUID: "dddddddd-2222-4333-8444-555555555555", Hostname: "runner-02.ci.example.com", SourceIP: ip("192.0.2.2"), Rule: `trusted_enrollment "ci"`},
		"rule gone, approved": {UUID: "eeeeeeee-2222-4333-8444-555555555555", Hostname: "runner-01.ci.example.com", SourceIP: ip("192.0.2.1"), Rule: `trusted_enrollment "ci"`},
		"renamed rule":        {UUID: "ffffffff-2222-4333-8444-555555555555", Hostname: "ws-ann.office.example.com", SourceIP: ip("198.51.100.4"), Rule: "trusted_enrollment[2]"},
		"token":               {UUID: "99999999-2222-4333-8444-555555555555", Hostname: "laptop.example.com", SourceIP: ip("203.0.113.7"), Rule: "token t2"},
		"removed, no address": {UUID: "88888888-2222-4333-8444-555555555555", Hostname: "runner-03.ci.example.com", Rule: `trusted_enrollment "ci"`},
	}
	tests := []struct {
		name   string
		envoys []string
		want   Impact
	}{
		{name: "no envoys"},
		{
			name:   "revocation by uuid",
			envoys: []string{"by uuid"},
			want:   Impact{Revokes: []Revoke{{Envoy: envoys["by uuid"], By: "uuid", Rule: "revocations[2]", Reason: "stolen laptop"}}},
		},
		{
			name:   "revocation by hostname",
			envoys: []string{"by hostname"},
			want:   Impact{Revokes: []Revoke{{Envoy: envoys["by hostname"], By: "hostname", Rule: "revocations[3]", Reason: "compromised"}}},
		},
		{
			name:   "revocation already in the old policy",
			envoys: []string{"already revoked"},
			want:   Impact{Revokes: []Revoke{{Envoy: envoys["already revoked"], By: "uuid", Rule: "revocations[1]", Reason: "lost", InOld: true}}},
		},
		{
			name:   "CIDR removed from the rule",
			envoys: []string{"CIDR removed", "still trusted"},
			want: Impact{NoLongerAdmitted: []Unadmitted{{
				Envoy: envoys["CIDR removed"],
				Old: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "dc1"`, Revision: "old",
					Reason: `app6.dc1.example.com matches trusted_enrollment "dc1" (pattern *.dc1.example.com) and fd00:10::6 is in its CIDRs`},
				New: Decision{Revision: "new",
					Reason: `no rule allows app6.dc1.example.com from fd00:10::6: not in approved, trusted_enrollment "dc1" matches this hostname but fd00:10::6 is not in its CIDRs, and no token was given`},
			}}},
		},
		{
			name:   "rule removal leaves an envoy unadmitted",
			envoys: []string{"rule removed", "rule gone, approved", "renamed rule"},
			want: Impact{NoLongerAdmitted: []Unadmitted{{
				Envoy:       envoys["rule removed"],
				RuleRemoved: true,
				Old: Decision{Allowed: true, Method: "trusted", Rule: `trusted_enrollment "ci"`, Revision: "old",
					Reason: `runner-02.ci.example.com matches trusted_enrollment "ci" (pattern runner-??.ci.example.com) and 192.0.2.2 is in its CIDRs`},
				New: Decision{Revision: "new",
					Reason: "no rule allows runner-02.ci.example.com from 192.0.2.2: not in approved, no trusted_enrollment entry matches this hostname and source, and no token was given"},
			}}},
		},
		{
			name:   "recorded rule removed, old policy denies too",
			envoys: []string{"removed, no address", "token"},
			want: Impact{NoLongerAdmitted: []Unadmitted{{
				Envoy:       envoys["removed, no address"],
				RuleRemoved: true,
				Old: Decision{Revision: "old",
					Reason: `no rule allows runner-03.ci.example.com from an unknown source address: not in approved, trusted_enrollment "ci" matches this hostname but an unknown source address is not in its CIDRs, and no token was given`},
				New: Decision{Revision: "new",
					Reason: "no rule allows runner-03.ci.example.com from an unknown source address: not in approved, no trusted_enrollment entry matches this hostname and source, and no token was given"},
			}}},
		},
	}
	c := Diff(old, new)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var refs []EnvoyRef
			for _, n := range tt.envoys {
				refs = append(refs, envoys[n])
			}
			got := c.Impact(refs)
			if diff := cmp.Diff(tt.want, got, diffOpts); diff != "" {
				t.Errorf("Impact (-want +got):\n%s", diff)
			}
		})
	}
	// An unchanged policy has no impact on any envoy.
	var all []EnvoyRef
	for _, e := range envoys {
		all = append(all, e)
	}
	same := Diff(new, new)
	if !same.Empty() {
		t.Errorf("Diff(new, new) is not empty: %+v", same)
	}
	im := same.Impact(all)
	for _, r := range im.Revokes {
		if !r.InOld {
			t.Errorf("unchanged policy: %s revoked as new", r.Envoy.Label())
		}
	}
	if len(im.NoLongerAdmitted) != 0 {
		t.Errorf("unchanged policy: NoLongerAdmitted = %+v", im.NoLongerAdmitted)
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0:                       "none",
		8760 * time.Hour:        "8760h",
		90 * time.Minute:        "1h30m",
		time.Hour + time.Second: "1h0m1s",
		45 * time.Second:        "45s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
