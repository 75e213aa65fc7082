package policy

import (
	"net/netip"
	"strings"
	"time"
)

// Policy is a loaded, valid enrollment policy. It is immutable and safe for
// concurrent use. Make one with [Load] or [Spec.Compile].
type Policy struct {
	revision     string
	certValidity time.Duration
	tokenMaxTTL  time.Duration
	trusted      []trustedRule
	approved     []approvedRule
	revocations  []Revocation
	revokedHosts map[string]int // normalised hostname -> index in revocations
	tests        []testCase
	spec         *Spec // what the policy was compiled from

	trustedIdx  globIndex
	approvedIdx globIndex
}

type trustedRule struct {
	name     string
	glob     Glob
	prefixes []netip.Prefix
	rule     string
	replace  string // ReplaceAny, ReplaceToken or ReplaceProof
}

type approvedRule struct {
	glob    Glob
	rule    string
	replace string
}

// Revocation is one entry of the policy's revocations: a UUID, a hostname
// (normalised), or both, and the reason.
type Revocation struct {
	UUID     string `json:"uuid,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	Reason   string `json:"reason"`
}

// Label names the revocation for people: "uuid U", "hostname H" or
// "uuid U hostname H".
func (r Revocation) Label() string {
	switch {
	case r.UUID != "" && r.Hostname != "":
		return "uuid " + r.UUID + " hostname " + r.Hostname
	case r.UUID != "":
		return "uuid " + r.UUID
	}
	return "hostname " + r.Hostname
}

// Counts are the numbers of entries in a policy, for reports such as
// "12 rules and 5 tests checked".
type Counts struct {
	Trusted     int // entries of trusted_enrollment
	Approved    int // patterns of approved
	Revocations int // entries of revocations
	Tests       int // cases of tests
}

// Rules is the number of rules: trusted entries, approved patterns and
// revocations.
func (c Counts) Rules() int { return c.Trusted + c.Approved + c.Revocations }

// Spec returns the spec the policy was compiled from: its persistable
// form. It is shared, not copied: callers must not modify it.
func (p *Policy) Spec() *Spec {
	if p == nil {
		return nil
	}
	return p.spec
}

// Revision returns the revision given to Load, such as a commit id.
func (p *Policy) Revision() string {
	if p == nil {
		return ""
	}
	return p.revision
}

// CertValidity returns the validity of new client certificates (cert_validity,
// 8760h by default).
func (p *Policy) CertValidity() time.Duration {
	if p == nil {
		return DefaultCertValidity
	}
	return p.certValidity
}

// TokenMaxTTL returns tokens.max_ttl, the longest lifetime of a new token, or
// 0 when there is no cap.
func (p *Policy) TokenMaxTTL() time.Duration {
	if p == nil {
		return 0
	}
	return p.tokenMaxTTL
}

// Revocations returns a copy of the policy's revocations, in file order.
func (p *Policy) Revocations() []Revocation {
	if p == nil {
		return nil
	}
	return append([]Revocation(nil), p.revocations...)
}

// RevokedHostname reports whether hostname (normalised first) is revoked by
// the policy, and returns the revocation.
func (p *Policy) RevokedHostname(hostname string) (Revocation, bool) {
	if p == nil {
		return Revocation{}, false
	}
	h, err := NormalizeHostname(hostname)
	if err != nil {
		return Revocation{}, false
	}
	i, ok := p.revokedHosts[h]
	if !ok {
		return Revocation{}, false
	}
	return p.revocations[i], true
}

// Counts returns the number of entries of each kind.
func (p *Policy) Counts() Counts {
	if p == nil {
		return Counts{}
	}
	return Counts{Trusted: len(p.trusted), Approved: len(p.approved), Revocations: len(p.revocations), Tests: len(p.tests)}
}

// globIndex finds the patterns that match a hostname without trying them all:
// patterns without wildcards are looked up by name, "*.suffix" patterns by
// each dot-suffix of the hostname, other patterns that end with a literal
// ".domain" by that domain (and then matched), and only the rest (such as
// "web*" or "*.dev.*") are tried one by one.
type globIndex struct {
	exact    map[string][]int32
	star     map[string][]int32 // "*" + key, key starts with '.' and has no wildcard
	byDomain map[string][]int32 // patterns whose literal tail contains key
	rest     []int32
}

func newGlobIndex(globs []Glob) globIndex {
	x := globIndex{exact: map[string][]int32{}, star: map[string][]int32{}, byDomain: map[string][]int32{}}
	for i, g := range globs {
		p := g.pattern
		switch {
		case p == "":
			// An invalid pattern in a policy that failed to load.
		case !g.wild:
			x.exact[p] = append(x.exact[p], int32(i))
		case p[0] == '*' && len(p) > 1 && p[1] == '.' && !strings.ContainsAny(p[1:], "*?"):
			x.star[p[1:]] = append(x.star[p[1:]], int32(i))
		default:
			tail := p[strings.LastIndexAny(p, "*?")+1:]
			if dot := strings.IndexByte(tail, '.'); dot >= 0 {
				x.byDomain[tail[dot:]] = append(x.byDomain[tail[dot:]], int32(i))
			} else {
				x.rest = append(x.rest, int32(i))
			}
		}
	}
	return x
}

// each calls fn with the index of every pattern in globs that matches h, a
// normalised hostname, in no particular order. fn returns false to stop.
func (x *globIndex) each(h string, globs func(int32) Glob, fn func(int32) bool) {
	for _, i := range x.exact[h] {
		if !fn(i) {
			return
		}
	}
	for d := 0; d < len(h); d++ {
		if h[d] != '.' {
			continue
		}
		suffix := h[d:]
		for _, i := range x.star[suffix] {
			if !fn(i) {
				return
			}
		}
		for _, i := range x.byDomain[suffix] {
			if globs(i).Match(h) && !fn(i) {
				return
			}
		}
	}
	for _, i := range x.rest {
		if globs(i).Match(h) && !fn(i) {
			return
		}
	}
}

func (p *Policy) buildIndexes() {
	tg := make([]Glob, len(p.trusted))
	for i, t := range p.trusted {
		tg[i] = t.glob
	}
	ag := make([]Glob, len(p.approved))
	for i, a := range p.approved {
		ag[i] = a.glob
	}
	p.trustedIdx = newGlobIndex(tg)
	p.approvedIdx = newGlobIndex(ag)
}
