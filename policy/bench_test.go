package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// largePolicy returns a policy folder with 10,000 approved patterns and 1,000
// trusted_enrollment entries, and requests that hit every kind of rule and
// miss them all.
//
// approved: 5,000 exact names, 3,000 "*.svcN.example.com", 1,990
// "web-*.dcN.example.com" and 10 patterns without a literal domain
// ("buildN-*"), which the index must try one by one.
// trusted: 1,000 "*.rackN.example.net" entries with two CIDRs each.
func largePolicy() ([]File, []Request) {
	var a strings.Builder
	a.WriteString("package policy\n\napproved: [\n")
	for i := range 5000 {
		fmt.Fprintf(&a, "\t\"host-%d.site%d.example.com\",\n", i, i%50)
	}
	for i := range 3000 {
		fmt.Fprintf(&a, "\t\"*.svc%d.example.com\",\n", i)
	}
	for i := range 1990 {
		fmt.Fprintf(&a, "\t\"web-*.dc%d.example.com\",\n", i)
	}
	for i := range 10 {
		fmt.Fprintf(&a, "\t\"build%d-*\",\n", i)
	}
	a.WriteString("]\n")
	var t strings.Builder
	t.WriteString("package policy\n\ntrusted_enrollment: [\n")
	for i := range 1000 {
		fmt.Fprintf(&t, "\t{name: \"rack%d\", pattern: \"*.rack%d.example.net\", cidrs: [\"10.%d.%d.0/24\", \"fd00:%x::/64\"]},\n", i, i, i/256, i%256, i)
	}
	t.WriteString("]\n")
	fsys := []File{
		{Name: "approved.cue", Data: []byte(a.String())},
		{Name: "trusted.cue", Data: []byte(t.String())},
	}
	ip := netip.MustParseAddr
	reqs := []Request{
		{Hostname: "host-4321.site21.example.com", SourceIP: ip("203.0.113.1")}, // exact
		{Hostname: "api.svc2999.example.com", SourceIP: ip("203.0.113.1")},      // *.suffix
		{Hostname: "web-17.dc1500.example.com", SourceIP: ip("203.0.113.1")},    // domain bucket
		{Hostname: "build7-x.example.org", SourceIP: ip("203.0.113.1")},         // rest
		{Hostname: "n1.rack999.example.net", SourceIP: ip("10.3.231.7")},        // trusted
		{Hostname: "n1.rack999.example.net", SourceIP: ip("fd00:3e7::9")},       // trusted IPv6
		{Hostname: "n1.rack999.example.net", SourceIP: ip("203.0.113.1")},       // trusted name, wrong source: deny
		{Hostname: "laptop.corp.example.com", SourceIP: ip("203.0.113.1")},      // no rule: deny
	}
	return fsys, reqs
}

// naiveDecide is Decide without indexes: every glob is tried in order. It is
// the baseline that BenchmarkDecide compares with.
func naiveDecide(p *Policy, req Request) Decision {
	d := Decision{Revision: p.revision}
	h, err := NormalizeHostname(req.Hostname)
	if err != nil {
		return d
	}
	if _, ok := p.revokedHosts[h]; ok {
		return d
	}
	src := req.SourceIP.Unmap()
	for _, t := range p.trusted {
		if t.glob.Match(h) && containsAddr(t.prefixes, src) {
			d.Allowed, d.Method, d.Rule = true, MethodTrusted, t.rule
			return d
		}
	}
	for _, a := range p.approved {
		if a.glob.Match(h) {
			d.Allowed, d.Method, d.Rule = true, MethodApproved, a.rule
			return d
		}
	}
	return d
}

func TestNaiveAgreesWithDecide(t *testing.T) {
	t.Parallel()
	fsys, reqs := largePolicy()
	p, err := Load(fsys, "bench")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		got, naive := p.Decide(r), naiveDecide(p, r)
		if got.Allowed != naive.Allowed || got.Method != naive.Method || got.Rule != naive.Rule {
			t.Errorf("%+v: Decide = %+v, naive = %+v", r, got, naive)
		}
	}
}

// BenchmarkDecide measures one decision on the large policy, with the
// compiled indexes ("indexed") and with a loop over every glob ("naive").
//
//	go test ./policy -run '^$' -bench 'Decide|Load' -benchtime 2s
func BenchmarkDecide(b *testing.B) {
	fsys, reqs := largePolicy()
	p, err := Load(fsys, "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("indexed", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			p.Decide(reqs[i%len(reqs)])
			i++
		}
	})
	b.Run("naive", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			naiveDecide(p, reqs[i%len(reqs)])
			i++
		}
	})
}

// BenchmarkLoad measures loading and validating the large policy.
func BenchmarkLoad(b *testing.B) {
	fsys, _ := largePolicy()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(fsys, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
