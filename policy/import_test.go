package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestImportLegacy imports a server.yaml of the original product (its
// documented examples, *.web.example.com from 10.0.0.0/8 and *.dev.* from
// 192.168.0.0/16) and checks that the policy decides as the original did:
// hostname glob AND source CIDR for trusted_enrollment, glob for approved.
func TestImportLegacy(t *testing.T) {
	t.Parallel()
	l := Legacy{
		Source: "server.yaml",
		Trusted: []LegacyTrusted{
			{Patterns: []string{"*.web.example.com"}, CIDRs: []string{"10.0.0.0/8"}},
			{Patterns: []string{"*.dev.*"}, CIDRs: []string{"192.168.0.0/16"}},
			{Name: "ci", Patterns: []string{"runner-?.ci.example.com", "BUILD-*.ci.example.com."}, CIDRs: []string{"192.0.2.0/26", "2001:db8:c1::/48"}},
		},
		CertValidity: "90d",
		Approved:     []string{"*.prod.example.com", "Monitor1.example.com.", "monitor1.example.com"},
	}
	files, err := ImportLegacy(l)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Load(files, "imported")
	if err != nil {
		t.Fatalf("the imported policy does not load:\n%v", err)
	}
	if got := p.CertValidity(); got != 90*24*time.Hour {
		t.Errorf("CertValidity() = %s, want 2160h (90d)", got)
	}
	cases := []struct {
		name, hostname, ip string
		method, rule       string // "" = deny
	}{
		{"web from the network", "a.web.example.com", "10.1.2.3", MethodTrusted, "trusted_enrollment[0]"},
		{"web from elsewhere", "a.web.example.com", "192.168.1.1", "", ""},
		{"dev anywhere in the name", "box.dev.corp", "192.168.4.4", MethodTrusted, "trusted_enrollment[1]"},
		{"dev from elsewhere", "box.dev.corp", "10.0.0.1", "", ""},
		{"first pattern of a named entry", "runner-1.ci.example.com", "192.0.2.5", MethodTrusted, `trusted_enrollment "ci-1"`},
		{"second pattern, IPv6", "build-7.ci.example.com", "2001:db8:c1::5", MethodTrusted, `trusted_enrollment "ci-2"`},
		{"ci outside its network", "runner-1.ci.example.com", "192.0.2.200", "", ""},
		{"approved", "api.prod.example.com", "203.0.113.1", MethodApproved, `approved "*.prod.example.com"`},
		{"approved single host", "MONITOR1.example.com", "203.0.113.1", MethodApproved, `approved "monitor1.example.com"`},
		{"nothing matches", "laptop.example.com", "10.1.2.3", "", ""},
	}
	for _, c := range cases {
		d := p.Decide(Request{Hostname: c.hostname, SourceIP: netip.MustParseAddr(c.ip)})
		if d.Method != c.method || d.Rule != c.rule || d.Allowed != (c.method != "") {
			t.Errorf("%s: %s from %s: got %v %q %q, want method %q rule %q", c.name, c.hostname, c.ip, d.Allowed, d.Method, d.Rule, c.method, c.rule)
		}
	}

	want := map[string]string{
		"trusted.cue": `package policy

// Imported by "vigocli policy import" from server.yaml (bootstrap.trusted_enrollment).
// A host enrolls without a token when its hostname matches pattern AND its
// source address is in one of cidrs; the first matching entry is recorded.
trusted_enrollment: [
	{
		pattern: "*.web.example.com"
		cidrs: ["10.0.0.0/8"]
	},
	{
		pattern: "*.dev.*"
		cidrs: ["192.168.0.0/16"]
	},
	{
		name:    "ci-1"
		pattern: "runner-?.ci.example.com"
		cidrs: ["192.0.2.0/26", "2001:db8:c1::/48"]
	},
	{
		name:    "ci-2"
		pattern: "build-*.ci.example.com"
		cidrs: ["192.0.2.0/26", "2001:db8:c1::/48"]
	},
]
`,
		"approved.cue": `package policy

// Imported by "vigocli policy import" from server.yaml (bootstrap.approved).
// Hosts matching these patterns enroll from anywhere without a token.
approved: [
	"*.prod.example.com",
	"monitor1.example.com",
]
`,
		"settings.cue": `package policy

// Imported by "vigocli policy import" from server.yaml (bootstrap.cert_validity: 90d).
cert_validity: "2160h"
`,
	}
	got := map[string]string{}
	for _, f := range files {
		got[f.Name] = string(f.Data)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("files (-want +got):\n%s", d)
	}
}

func TestImportLegacyErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		l    Legacy
		want []string
	}{
		{"nothing", Legacy{Source: "s.yaml"}, []string{"s.yaml has no bootstrap.trusted_enrollment, bootstrap.cert_validity or approved patterns"}},
		{"host bits and bad pattern", Legacy{Source: "s.yaml", Trusted: []LegacyTrusted{
			{Line: 4, Patterns: []string{"a[1].example.com"}, CIDRs: []string{"10.1.2.3/8", "nonsense"}},
		}}, []string{
			"s.yaml:4: trusted_enrollment[0]: CIDR 10.1.2.3/8 has host bits set: the original ignored them; write 10.0.0.0/8",
			`s.yaml:4: trusted_enrollment[0]: "nonsense" is not a network in CIDR notation`,
			`s.yaml:4: trusted_enrollment[0]: pattern "a[1].example.com": '[' is not supported`,
		}},
		{"no cidrs", Legacy{Source: "s.yaml", Trusted: []LegacyTrusted{{Line: 2, Patterns: []string{"a.example.com"}}}},
			[]string{"s.yaml:2: trusted_enrollment[0] has no cidrs"}},
		{"duration", Legacy{Source: "s.yaml", CertValidity: "1y"}, []string{`cert_validity: invalid duration "1y"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := ImportLegacy(c.l)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}
