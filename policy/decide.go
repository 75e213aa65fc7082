package policy

import (
	"fmt"
	"net/netip"
)

// Methods of an allowed Decision.
const (
	MethodTrusted  = "trusted"
	MethodApproved = "approved"
	MethodToken    = "token"
)

// NoPolicyReason is the reason given when a rule-based enrollment is asked of
// a nil Policy (the server has not loaded any valid policy yet).
const NoPolicyReason = "no valid enrollment policy has been loaded yet"

// Request is an enrollment request to decide.
type Request struct {
	// Hostname is the name the host registers with; it is normalised
	// (lower case, no trailing dot) and validated.
	Hostname string
	// SourceIP is the address the request came from: the TCP peer, or the
	// client address given by a trusted proxy. IPv4-mapped IPv6 addresses are
	// compared as IPv4. The zero Addr matches no trusted_enrollment entry.
	SourceIP netip.Addr
	// Token is the token presented, nil when none. The caller (the store)
	// has already checked that it exists, is unused, unexpired and not
	// revoked; Decide checks only that its pattern matches the hostname.
	Token *TokenInfo
}

// TokenInfo describes a presented token. It never holds the secret.
type TokenInfo struct {
	ID      string // the public id of the token (vt_<id>.…)
	Pattern string // the hostname glob the token is bound to
}

// Decision is the outcome of [Policy.Decide].
type Decision struct {
	// Allowed reports whether the host may enroll.
	Allowed bool `json:"allowed"`
	// Method is "trusted", "approved" or "token" when allowed, "" when denied.
	Method string `json:"method"`
	// Rule names the entry that decided: `trusted_enrollment "name"` or
	// trusted_enrollment[INDEX], `approved "pattern"`, "token ID",
	// revocations[INDEX]; "" when no rule applied (default deny).
	Rule string `json:"rule"`
	// Reason explains the decision in words an operator can act on.
	Reason string `json:"reason"`
	// Revision is the policy revision that decided ("" without a policy).
	Revision string `json:"revision"`
	// Replace says who may replace an active envoy of the hostname when
	// the decision allows (ReplaceAny, ReplaceToken or ReplaceProof): the
	// rule's replace setting; a token always may.
	Replace string `json:"replace,omitempty"`
}

// Decide decides whether a host may enroll, in this order: a hostname revoked
// by policy is denied; a trusted_enrollment entry matching the hostname and
// the source address allows; an approved pattern matching the hostname
// allows; a token whose pattern matches the hostname allows; anything else is
// denied. Within trusted_enrollment the first matching entry in file order
// is reported.
//
// Decide may be called on a nil *Policy, for a server that has no valid
// policy yet: rule-based enrollment is then refused with [NoPolicyReason],
// and a token whose pattern matches the hostname is still allowed.
func (p *Policy) Decide(req Request) Decision {
	d := Decision{Revision: p.Revision()}
	h, err := NormalizeHostname(req.Hostname)
	if err != nil {
		d.Reason = fmt.Sprintf("invalid hostname: %v", err)
		return d
	}
	src := req.SourceIP.Unmap().WithZone("")
	from := "an unknown source address"
	if src.IsValid() {
		from = src.String()
	}

	if p == nil {
		if ok, d2 := decideToken(d, h, req.Token); ok {
			return d2
		}
		d.Reason = fmt.Sprintf("%s: %s can enroll only with a token, and %s", NoPolicyReason, h, tokenProblem(h, req.Token))
		return d
	}

	// 1. Revoked hostnames are denied whatever else matches.
	if i, ok := p.revokedHosts[h]; ok {
		d.Rule = fmt.Sprintf("revocations[%d]", i)
		d.Reason = fmt.Sprintf("hostname %s is revoked by policy: %s", h, p.revocations[i].Reason)
		return d
	}

	// 2. Trusted: hostname glob AND source CIDR; the first entry wins.
	best, nameOnly := int32(-1), int32(-1)
	p.trustedIdx.each(h, func(i int32) Glob { return p.trusted[i].glob }, func(i int32) bool {
		if best >= 0 && i > best {
			return true
		}
		if src.IsValid() && containsAddr(p.trusted[i].prefixes, src) {
			best = i
		} else if nameOnly < 0 || i < nameOnly {
			nameOnly = i
		}
		return true
	})
	if best >= 0 {
		t := p.trusted[best]
		d.Allowed, d.Method, d.Rule, d.Replace = true, MethodTrusted, t.rule, t.replace
		d.Reason = fmt.Sprintf("%s matches %s (pattern %s) and %s is in its CIDRs", h, t.rule, t.glob, src)
		return d
	}

	// 3. Approved patterns.
	first := int32(-1)
	p.approvedIdx.each(h, func(i int32) Glob { return p.approved[i].glob }, func(i int32) bool {
		if first < 0 || i < first {
			first = i
		}
		return true
	})
	if first >= 0 {
		a := p.approved[first]
		d.Allowed, d.Method, d.Rule, d.Replace = true, MethodApproved, a.rule, a.replace
		d.Reason = fmt.Sprintf("%s matches approved pattern %s", h, a.glob)
		return d
	}

	// 4. A token bound to a matching pattern.
	if ok, d2 := decideToken(d, h, req.Token); ok {
		return d2
	}

	// 5. Deny, saying what was tried.
	trusted := "no trusted_enrollment entry matches this hostname and source"
	if nameOnly >= 0 {
		t := p.trusted[nameOnly]
		trusted = fmt.Sprintf("%s matches this hostname but %s is not in its CIDRs", t.rule, from)
	}
	d.Reason = fmt.Sprintf("no rule allows %s from %s: not in approved, %s, and %s", h, from, trusted, tokenProblem(h, req.Token))
	return d
}

// decideToken allows the request when tok's pattern matches h.
func decideToken(d Decision, h string, tok *TokenInfo) (bool, Decision) {
	if tok == nil {
		return false, d
	}
	g, err := CompileGlob(tok.Pattern)
	if err != nil || !g.Match(h) {
		return false, d
	}
	d.Allowed, d.Method, d.Rule, d.Replace = true, MethodToken, "token "+tok.ID, ReplaceAny
	d.Reason = fmt.Sprintf("token %s is bound to pattern %s, which matches %s", tok.ID, g, h)
	return true, d
}

// DecideToken decides a registration by its token alone (for a
// replacement that a rule does not allow without one): allowed when tok's
// pattern matches the hostname and the hostname is not revoked.
func (p *Policy) DecideToken(hostname string, tok *TokenInfo) Decision {
	d := Decision{Revision: p.Revision()}
	h, err := NormalizeHostname(hostname)
	if err != nil {
		d.Reason = fmt.Sprintf("invalid hostname: %v", err)
		return d
	}
	if _, revoked := p.RevokedHostname(h); revoked {
		d.Reason = fmt.Sprintf("hostname %s is revoked by policy", h)
		return d
	}
	if ok, d2 := decideToken(d, h, tok); ok {
		return d2
	}
	d.Reason = tokenProblem(h, tok)
	return d
}

// tokenProblem says why tok did not allow h.
func tokenProblem(h string, tok *TokenInfo) string {
	if tok == nil {
		return "no token was given"
	}
	if _, err := CompileGlob(tok.Pattern); err != nil {
		return fmt.Sprintf("token %s has an invalid pattern", tok.ID)
	}
	return fmt.Sprintf("token %s is bound to pattern %s, which does not match %s", tok.ID, tok.Pattern, h)
}

func containsAddr(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
