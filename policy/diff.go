package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Changes is the difference between two policies, as computed by [Diff]:
// the rules added, removed and changed, and the decisions of the policies'
// own tests that change. Use [Changes.Impact] to see what the change does to
// enrolled envoys.
type Changes struct {
	// Added holds the entries of the new policy that the old one lacks.
	Added Entries `json:"added"`
	// Removed holds the entries of the old policy that the new one lacks.
	Removed Entries `json:"removed"`
	// Changed holds the entries present in both with other contents, and
	// the settings whose values differ.
	Changed Changed `json:"changed"`
	// TestChanges are the cases of either policy's tests that the two
	// policies decide differently: another outcome, or another rule that
	// allows (the rule of a denial is not compared, nor the position of an
	// unnamed trusted_enrollment entry).
	TestChanges []TestChange `json:"test_changes"`

	old, new *Policy
}

// Entries are rules of one policy.
type Entries struct {
	Trusted     []TrustedEntry `json:"trusted_enrollment,omitempty"`
	Approved    []string       `json:"approved,omitempty"`
	Revocations []Revocation   `json:"revocations,omitempty"`
}

// Len returns the number of entries.
func (e Entries) Len() int { return len(e.Trusted) + len(e.Approved) + len(e.Revocations) }

// TrustedEntry is an entry of trusted_enrollment.
type TrustedEntry struct {
	// Name is the entry's name; "" when it has none.
	Name string `json:"name,omitempty"`
	// Pattern is the normalised hostname glob.
	Pattern string `json:"pattern"`
	// CIDRs are the source networks, in file order.
	CIDRs []netip.Prefix `json:"cidrs"`
}

// Label names the entry for people: its quoted name, else its pattern.
func (t TrustedEntry) Label() string {
	if t.Name != "" {
		return fmt.Sprintf("%q", t.Name)
	}
	return "pattern " + t.Pattern
}

// Changed lists the entries and settings that both policies have with other
// contents.
type Changed struct {
	Trusted     []TrustedChange    `json:"trusted_enrollment,omitempty"`
	Revocations []RevocationChange `json:"revocations,omitempty"`
	Settings    []SettingChange    `json:"settings,omitempty"`
}

// Len returns the number of changes.
func (c Changed) Len() int { return len(c.Trusted) + len(c.Revocations) + len(c.Settings) }

// TrustedChange is a trusted_enrollment entry found in both policies (by
// name, else by pattern) whose name, pattern or CIDRs changed. An entry whose
// name changed but whose pattern stayed is a rename.
type TrustedChange struct {
	Old TrustedEntry `json:"old"`
	New TrustedEntry `json:"new"`
	// CIDRsAdded and CIDRsRemoved are the networks only New, and only Old,
	// lists.
	CIDRsAdded   []netip.Prefix `json:"cidrs_added,omitempty"`
	CIDRsRemoved []netip.Prefix `json:"cidrs_removed,omitempty"`
}

// Renamed reports whether the entry's name changed.
func (c TrustedChange) Renamed() bool { return c.Old.Name != c.New.Name }

// RevocationChange is a revocation found in both policies (by UUID, else by
// hostname) whose UUID, hostname or reason changed.
type RevocationChange struct {
	Old Revocation `json:"old"`
	New Revocation `json:"new"`
}

// SettingChange is a setting whose value changed: "cert_validity" or
// "tokens.max_ttl". Values are Go durations such as "2160h", or "none" for a
// tokens.max_ttl that is not set.
type SettingChange struct {
	Setting string `json:"setting"`
	Old     string `json:"old"`
	New     string `json:"new"`
}

// TestChange is a case of the tests of either policy that the two policies
// decide differently.
type TestChange struct {
	// In is "new" when the case is in the new policy's tests (File, Line and
	// Col locate it there), else "old".
	In       string   `json:"in"`
	File     string   `json:"file"`
	Line     int      `json:"line"`
	Col      int      `json:"col"`
	Hostname string   `json:"hostname"`
	IP       string   `json:"ip"`
	Token    bool     `json:"token,omitempty"`
	Expect   string   `json:"expect"`
	Old      Decision `json:"old"`
	New      Decision `json:"new"`
}

// Empty reports whether the two policies have the same rules, settings and
// test decisions.
func (c Changes) Empty() bool {
	return c.Added.Len() == 0 && c.Removed.Len() == 0 && c.Changed.Len() == 0 && len(c.TestChanges) == 0
}

// Diff compares the old and the new policy. A nil policy counts as one with
// no rules (and decides as [Policy.Decide] does for nil). Diff does not
// compare the order of entries nor the tests themselves, only their
// decisions.
func Diff(old, new *Policy) Changes {
	c := Changes{old: old, new: new}
	o, n := orEmpty(old), orEmpty(new)
	c.diffTrusted(o.trusted, n.trusted)
	c.diffApproved(o.approved, n.approved)
	c.diffRevocations(o.revocations, n.revocations)
	if o.certValidity != n.certValidity {
		c.Changed.Settings = append(c.Changed.Settings, SettingChange{Setting: "cert_validity", Old: FormatDuration(o.certValidity), New: FormatDuration(n.certValidity)})
	}
	if o.tokenMaxTTL != n.tokenMaxTTL {
		c.Changed.Settings = append(c.Changed.Settings, SettingChange{Setting: "tokens.max_ttl", Old: FormatDuration(o.tokenMaxTTL), New: FormatDuration(n.tokenMaxTTL)})
	}
	c.diffTests(o, n)
	return c
}

var emptyPolicy = &Policy{certValidity: DefaultCertValidity}

func orEmpty(p *Policy) *Policy {
	if p == nil {
		return emptyPolicy
	}
	return p
}

// FormatDuration formats d as a policy writes it: "2160h", "1h30m", "1m30s";
// "none" for 0.
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func trustedEntry(t trustedRule) TrustedEntry {
	return TrustedEntry{Name: t.name, Pattern: t.glob.String(), CIDRs: slices.Clone(t.prefixes)}
}

// diffTrusted pairs entries by name first, then the remaining ones by
// pattern in file order (which finds renamed entries); the rest are added or
// removed.
func (c *Changes) diffTrusted(old, new []trustedRule) {
	pair := make([]int, len(new)) // index in old, or -1
	used := make([]bool, len(old))
	for i := range pair {
		pair[i] = -1
	}
	byName := map[string]int{}
	for i, t := range old {
		if t.name != "" {
			byName[t.name] = i
		}
	}
	for i, t := range new {
		if j, ok := byName[t.name]; ok && t.name != "" {
			pair[i], used[j] = j, true
		}
	}
	for i, t := range new {
		if pair[i] >= 0 {
			continue
		}
		for j, u := range old {
			if used[j] || u.glob.String() != t.glob.String() {
				continue
			}
			pair[i], used[j] = j, true
			break
		}
	}
	for j, u := range old {
		if !used[j] {
			c.Removed.Trusted = append(c.Removed.Trusted, trustedEntry(u))
		}
	}
	for i, t := range new {
		if pair[i] < 0 {
			c.Added.Trusted = append(c.Added.Trusted, trustedEntry(t))
			continue
		}
		u := old[pair[i]]
		ch := TrustedChange{Old: trustedEntry(u), New: trustedEntry(t)}
		for _, p := range t.prefixes {
			if !slices.Contains(u.prefixes, p) {
				ch.CIDRsAdded = append(ch.CIDRsAdded, p)
			}
		}
		for _, p := range u.prefixes {
			if !slices.Contains(t.prefixes, p) {
				ch.CIDRsRemoved = append(ch.CIDRsRemoved, p)
			}
		}
		if ch.Renamed() || ch.Old.Pattern != ch.New.Pattern || len(ch.CIDRsAdded) > 0 || len(ch.CIDRsRemoved) > 0 {
			c.Changed.Trusted = append(c.Changed.Trusted, ch)
		}
	}
}

func (c *Changes) diffApproved(old, new []approvedRule) {
	in := func(rules []approvedRule, g Glob) bool {
		for _, r := range rules {
			if r.glob.String() == g.String() {
				return true
			}
		}
		return false
	}
	for _, r := range old {
		if !in(new, r.glob) {
			c.Removed.Approved = append(c.Removed.Approved, r.glob.String())
		}
	}
	for _, r := range new {
		if !in(old, r.glob) {
			c.Added.Approved = append(c.Added.Approved, r.glob.String())
		}
	}
}

// diffRevocations pairs revocations by UUID first, then the remaining ones by
// hostname.
func (c *Changes) diffRevocations(old, new []Revocation) {
	pair := make([]int, len(new))
	used := make([]bool, len(old))
	for i := range pair {
		pair[i] = -1
	}
	match := func(key func(Revocation) string) {
		idx := map[string]int{}
		for j, r := range old {
			if k := key(r); k != "" && !used[j] {
				if _, dup := idx[k]; !dup {
					idx[k] = j
				}
			}
		}
		for i, r := range new {
			if pair[i] >= 0 {
				continue
			}
			if j, ok := idx[key(r)]; ok && key(r) != "" && !used[j] {
				pair[i], used[j] = j, true
			}
		}
	}
	match(func(r Revocation) string { return r.UUID })
	match(func(r Revocation) string { return r.Hostname })
	for j, r := range old {
		if !used[j] {
			c.Removed.Revocations = append(c.Removed.Revocations, r)
		}
	}
	for i, r := range new {
		switch {
		case pair[i] < 0:
			c.Added.Revocations = append(c.Added.Revocations, r)
		case old[pair[i]] != r:
			c.Changed.Revocations = append(c.Changed.Revocations, RevocationChange{Old: old[pair[i]], New: r})
		}
	}
}

// diffTests decides the cases of both policies' tests (new first, each case
// once) with both policies.
func (c *Changes) diffTests(o, n *Policy) {
	type key struct {
		host, ip string
		token    bool
	}
	seen := map[key]bool{}
	for _, side := range []struct {
		in string
		p  *Policy
	}{{"new", n}, {"old", o}} {
		for _, tc := range side.p.tests {
			k := key{strings.ToLower(strings.TrimSuffix(tc.hostname, ".")), tc.ip.String(), tc.token}
			if seen[k] {
				continue
			}
			seen[k] = true
			req := Request{Hostname: tc.hostname, SourceIP: tc.ip}
			if tc.token {
				req.Token = &TokenInfo{ID: "test", Pattern: tc.hostname}
			}
			od, nd := c.old.Decide(req), c.new.Decide(req)
			if Outcome(od) == Outcome(nd) && (!od.Allowed || ruleKey(o, od.Rule) == ruleKey(n, nd.Rule)) {
				continue
			}
			c.TestChanges = append(c.TestChanges, TestChange{
				In: side.in, File: tc.pos.File, Line: tc.pos.Line, Col: tc.pos.Col,
				Hostname: tc.hostname, IP: tc.ipText, Token: tc.token, Expect: tc.expect,
				Old: od, New: nd,
			})
		}
	}
}

// ruleKey names the rule of an allowed decision of p in a way that does not
// depend on its position: an unnamed trusted_enrollment entry (whose rule is
// trusted_enrollment[INDEX]) by its pattern, so that inserting an entry
// above it is not a change.
func ruleKey(p *Policy, rule string) string {
	for _, t := range p.trusted {
		if t.rule == rule && t.name == "" {
			return "trusted_enrollment pattern " + t.glob.String()
		}
	}
	return rule
}

// EnvoyRef is an enrolled envoy, as [Changes.Impact] needs it.
type EnvoyRef struct {
	UUID     string `json:"uuid"`
	Hostname string `json:"hostname"`
	// SourceIP is the address the envoy enrolled from; the zero Addr when
	// unknown (then no trusted_enrollment entry admits it).
	SourceIP netip.Addr `json:"source_ip"`
	// Rule is the rule recorded at enrollment, such as
	// `trusted_enrollment "dc1"`; it may be empty.
	Rule string `json:"rule,omitempty"`
}

// Label names the envoy for people: "hostname (uuid)".
func (e EnvoyRef) Label() string {
	switch {
	case e.Hostname == "":
		return e.UUID
	case e.UUID == "":
		return e.Hostname
	}
	return e.Hostname + " (" + e.UUID + ")"
}

// Impact is what a policy change does to enrolled envoys.
type Impact struct {
	// Revokes are the envoys the new policy's revocations match: the server
	// revokes them when it applies the new policy.
	Revokes []Revoke `json:"revokes"`
	// NoLongerAdmitted are the envoys, not revoked, that the new policy
	// would not admit again by rule. They stay enrolled: removing a rule
	// revokes nobody.
	NoLongerAdmitted []Unadmitted `json:"no_longer_admitted"`
}

// Revoke is an envoy that a revocation of the new policy matches.
type Revoke struct {
	Envoy EnvoyRef `json:"envoy"`
	// By is "uuid" or "hostname": what the revocation matched.
	By string `json:"by"`
	// Rule is the revocation, such as "revocations[2]", in the new policy.
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
	// InOld reports that the old policy already revokes the envoy (so the
	// server, if it applied the old policy, has already revoked it).
	InOld bool `json:"in_old,omitempty"`
}

// Unadmitted is an envoy that the new policy would not admit again, when
// registering without a token from the address it enrolled from.
type Unadmitted struct {
	Envoy EnvoyRef `json:"envoy"`
	// RuleRemoved reports that the envoy's recorded rule is a rule of the
	// old policy that the new one no longer has.
	RuleRemoved bool `json:"rule_removed,omitempty"`
	// Old and New are the decisions of the two policies.
	Old Decision `json:"old"`
	New Decision `json:"new"`
}

// Impact returns what the change does to envoys, which should be the active
// ones: those that a revocation of the new policy matches by UUID or
// hostname, and, among the others, those that the new policy would not admit
// again by rule (deciding their hostname and source address without a token)
// while the old policy would, or whose recorded rule the new policy removed.
// Envoys are reported in the order given.
func (c Changes) Impact(envoys []EnvoyRef) Impact {
	o, n := orEmpty(c.old), orEmpty(c.new)
	oldUUIDs, newUUIDs := uuidIndex(o), uuidIndex(n)
	oldRules, newRules := ruleSet(o), ruleSet(n)
	var im Impact
	for _, e := range envoys {
		h, herr := NormalizeHostname(e.Hostname)
		if r, by, i, ok := revokedBy(n, newUUIDs, e.UUID, h, herr == nil); ok {
			_, _, _, inOld := revokedBy(o, oldUUIDs, e.UUID, h, herr == nil)
			im.Revokes = append(im.Revokes, Revoke{Envoy: e, By: by, Rule: fmt.Sprintf("revocations[%d]", i), Reason: r.Reason, InOld: inOld})
			continue
		}
		req := Request{Hostname: e.Hostname, SourceIP: e.SourceIP}
		nd := c.new.Decide(req)
		if nd.Allowed {
			continue
		}
		od := c.old.Decide(req)
		removed := e.Rule != "" && oldRules[e.Rule] && !newRules[e.Rule]
		if od.Allowed || removed {
			im.NoLongerAdmitted = append(im.NoLongerAdmitted, Unadmitted{Envoy: e, RuleRemoved: removed, Old: od, New: nd})
		}
	}
	return im
}

func uuidIndex(p *Policy) map[string]int {
	m := map[string]int{}
	for i, r := range p.revocations {
		if r.UUID != "" {
			m[r.UUID] = i
		}
	}
	return m
}

// revokedBy finds the revocation of p matching an envoy, by UUID first.
func revokedBy(p *Policy, uuids map[string]int, uuid, hostname string, validHost bool) (Revocation, string, int, bool) {
	if i, ok := uuids[strings.ToLower(uuid)]; ok && uuid != "" {
		return p.revocations[i], "uuid", i, true
	}
	if validHost {
		if i, ok := p.revokedHosts[hostname]; ok {
			return p.revocations[i], "hostname", i, true
		}
	}
	return Revocation{}, "", 0, false
}

// ruleSet returns the names of the rules of p, as Decision.Rule names them.
func ruleSet(p *Policy) map[string]bool {
	m := map[string]bool{}
	for _, t := range p.trusted {
		m[t.rule] = true
	}
	for _, a := range p.approved {
		m[a.rule] = true
	}
	return m
}
