package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// SpecVersion is the version of the [Spec] encoding. A spec persisted with
// another version is not trusted: the server evaluates its files again.
const SpecVersion = 1

// Pos locates a value in a policy file; the zero Pos means unknown (such
// as a default taken from the schema).
type Pos struct {
	File string `json:"f,omitempty"`
	Line int    `json:"l,omitempty"`
	Col  int    `json:"c,omitempty"`
}

// Str is a string value of a policy with its position.
type Str struct {
	Value string `json:"v"`
	Pos   Pos    `json:"p"`
	// Path is the CUE path of an entry of a keyed field (such as
	// approved_by_owner.web[0]); "" for an entry of a list, whose path is
	// its index.
	Path string `json:"path,omitempty"`
}

// Spec is a policy as CUE evaluated it: the concrete values of the policy
// files, each with its position, before the checks and compilation that
// [Spec.Compile] does in Go. It is the policy's compiled form: the server
// persists it (as JSON) as the last good revision, so that a restart builds
// the active policy with [Spec.Compile] alone and never runs CUE again on
// content that was already judged. A Spec is produced by [Evaluate].
type Spec struct {
	// Version is SpecVersion.
	Version      int              `json:"version"`
	Trusted      []TrustedSpec    `json:"trusted_enrollment,omitempty"`
	Approved     []ApprovedSpec   `json:"approved,omitempty"`
	CertValidity Str              `json:"cert_validity"`
	TokenMaxTTL  *Str             `json:"token_max_ttl,omitempty"`
	Revocations  []RevocationSpec `json:"revocations,omitempty"`
	Tests        []TestSpec       `json:"tests,omitempty"`
}

// ApprovedSpec is an entry of approved (or approved_by_owner): its
// pattern and who may replace an envoy it admits ("" means "any").
type ApprovedSpec struct {
	Str
	Replace string `json:"replace,omitempty"`
}

// Who may replace an active envoy of a hostname a rule admits (the
// schema's #Replace).
const (
	ReplaceAny   = "any"
	ReplaceToken = "token"
	ReplaceProof = "proof"
)

// TrustedSpec is an entry of trusted_enrollment (or of
// trusted_enrollment_by_name, then with its Path).
type TrustedSpec struct {
	Path    string `json:"path,omitempty"`
	Replace string `json:"replace,omitempty"`
	Name    *Str   `json:"name,omitempty"`
	Pattern Str    `json:"pattern"`
	CIDRs   []Str  `json:"cidrs"`
	// CIDRsPos locates the list of CIDRs.
	CIDRsPos Pos `json:"cp"`
	Pos      Pos `json:"p"`
}

// RevocationSpec is an entry of revocations (or revocations_by_key).
type RevocationSpec struct {
	Path     string `json:"path,omitempty"`
	UUID     *Str   `json:"uuid,omitempty"`
	Hostname *Str   `json:"hostname,omitempty"`
	Reason   string `json:"reason"`
	Pos      Pos    `json:"p"`
}

// TestSpec is a case of tests (or tests_by_name).
type TestSpec struct {
	Path     string `json:"path,omitempty"`
	Hostname string `json:"hostname"`
	IP       Str    `json:"ip"`
	Token    bool   `json:"token,omitempty"`
	Expect   string `json:"expect"`
	Pos      Pos    `json:"p"`
}

// MarshalSpec encodes s for storage.
func MarshalSpec(s *Spec) ([]byte, error) {
	if s == nil {
		return nil, errors.New("marshal policy spec: nil spec")
	}
	return json.Marshal(s)
}

// UnmarshalSpec decodes a spec encoded by MarshalSpec. It fails when the
// spec was written with another SpecVersion.
func UnmarshalSpec(b []byte) (*Spec, error) {
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode policy spec: %w", err)
	}
	if s.Version != SpecVersion {
		return nil, fmt.Errorf("decode policy spec: version %d, this program reads version %d", s.Version, SpecVersion)
	}
	return &s, nil
}

// Compile checks what CUE cannot (host bits of CIDRs, glob syntax beyond
// its characters, duration bounds, duplicates across entries) and returns
// the policy, labelled with revision. Problems are returned as [Errors].
// Compile is pure Go and linear in the size of s: it is what a server runs
// on a persisted spec at start.
func (s *Spec) Compile(revision string) (*Policy, error) {
	if s == nil {
		return nil, errors.New("compile policy: nil spec")
	}
	if s.Version != SpecVersion {
		return nil, fmt.Errorf("compile policy: spec version %d, this program reads version %d", s.Version, SpecVersion)
	}
	p, errs := s.compile(revision)
	if len(errs) > 0 {
		return nil, sortErrors(errs)
	}
	return p, nil
}

func (p Pos) errorf(path, format string, args ...any) *Error {
	return &Error{File: p.File, Line: p.Line, Col: p.Col, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// compile builds the policy from s and returns it with the problems found.
// It is tolerant of values that CUE already reported as wrong (empty or
// unparsable strings): the caller drops problems at paths CUE reported.
func (s *Spec) compile(revision string) (*Policy, Errors) {
	var errs Errors
	bad := func(pos Pos, path, format string, args ...any) {
		errs = append(errs, pos.errorf(path, format, args...))
	}
	p := &Policy{revision: revision, certValidity: DefaultCertValidity, spec: s}

	names := map[string]int{}
	pairs := map[string]int{}
	for i, e := range s.Trusted {
		base := fmt.Sprintf("trusted_enrollment[%d]", i)
		if e.Path != "" {
			base = e.Path
		}
		t := trustedRule{rule: base, replace: replaceOr(e.Replace)}
		if !validReplace(e.Replace) {
			bad(e.Pos, base+".replace", "replace %q: must be any, token or proof", e.Replace)
		}
		if e.Name != nil {
			if j, dup := names[e.Name.Value]; dup {
				npath := base + ".name"
				if e.Path != "" {
					npath = base // the key is the name
				}
				bad(e.Name.Pos, npath, "name %q is already used by %s", e.Name.Value, s.trustedPath(j))
			}
			names[e.Name.Value] = i
			t.name = e.Name.Value
			t.rule = fmt.Sprintf("trusted_enrollment %q", e.Name.Value)
		}
		g, err := CompileGlob(e.Pattern.Value)
		if err != nil {
			bad(e.Pattern.Pos, base+".pattern", "%v", err)
		}
		t.glob = g
		if len(e.CIDRs) == 0 {
			// Why Go: in CUE, a constraint on the length fails as well when
			// an element is wrong, and would then report a second problem.
			bad(e.CIDRsPos, base+".cidrs", "cidrs is empty: list at least one source network")
		}
		seen := map[netip.Prefix]bool{}
		for j, c := range e.CIDRs {
			cpath := fmt.Sprintf("%s.cidrs[%d]", base, j)
			pfx, err := netip.ParsePrefix(c.Value)
			switch {
			case err != nil:
				msg := err.Error()
				if _, after, ok := strings.Cut(msg, "): "); ok {
					msg = after // drop netip.ParsePrefix("…"), which repeats the value
				}
				bad(c.Pos, cpath, "invalid CIDR %q: %s", c.Value, msg)
				continue
			case pfx.Addr().Zone() != "":
				bad(c.Pos, cpath, "CIDR %q has a zone", c.Value)
				continue
			case pfx.Addr().Is4In6():
				bad(c.Pos, cpath, "CIDR %q is an IPv4-mapped IPv6 network: write %s", c.Value, netip.PrefixFrom(pfx.Addr().Unmap(), max(pfx.Bits()-96, 0)).Masked())
				continue
			case pfx != pfx.Masked():
				bad(c.Pos, cpath, "CIDR %s has host bits set: write %s", c.Value, pfx.Masked())
				continue
			case seen[pfx]:
				bad(c.Pos, cpath, "CIDR %s is listed twice", c.Value)
				continue
			}
			seen[pfx] = true
			key := t.glob.String() + " " + pfx.String()
			if k, dup := pairs[key]; dup && k != i {
				bad(c.Pos, cpath, "pattern %q with CIDR %s is already in %s", t.glob.String(), pfx, s.trustedPath(k))
			}
			pairs[key] = i
			t.prefixes = append(t.prefixes, pfx)
		}
		p.trusted = append(p.trusted, t)
	}

	approved := map[string]int{}
	for i, a := range s.Approved {
		apath := fmt.Sprintf("approved[%d]", i)
		if a.Path != "" {
			apath = a.Path
		}
		g, err := CompileGlob(a.Value)
		if err != nil {
			bad(a.Pos, apath, "%v", err)
			continue
		}
		if j, dup := approved[g.String()]; dup {
			bad(a.Pos, apath, "pattern %q is already at %s", g.String(), s.approvedPath(j))
			continue
		}
		approved[g.String()] = i
		if !validReplace(a.Replace) {
			bad(a.Pos, apath, "replace %q: must be any, token or proof", a.Replace)
		}
		p.approved = append(p.approved, approvedRule{glob: g, rule: fmt.Sprintf("approved %q", g.String()), replace: replaceOr(a.Replace)})
	}

	// Why Go checks the bounds: CUE could only compare the durations as
	// integers of nanoseconds, in messages an operator cannot read.
	if v := s.CertValidity; v.Value != "" {
		d, err := time.ParseDuration(v.Value)
		switch {
		case err != nil:
			bad(v.Pos, "cert_validity", "invalid duration %q: %s", v.Value, durationHint)
		case d < MinCertValidity || d > MaxCertValidity:
			bad(v.Pos, "cert_validity", "%s is out of bounds: cert_validity must be between 1h and 87600h", v.Value)
		default:
			p.certValidity = d
		}
	} else {
		bad(Pos{}, "cert_validity", "cert_validity is missing")
	}
	if v := s.TokenMaxTTL; v != nil {
		d, err := time.ParseDuration(v.Value)
		switch {
		case err != nil:
			bad(v.Pos, "tokens.max_ttl", "invalid duration %q: %s", v.Value, durationHint)
		case d <= 0 || d > MaxTokenTTL:
			bad(v.Pos, "tokens.max_ttl", "%s is out of bounds: tokens.max_ttl must be more than 0s and at most 8760h", v.Value)
		default:
			p.tokenMaxTTL = d
		}
	}

	p.revokedHosts = map[string]int{}
	uuids := map[string]int{}
	for i, rv := range s.Revocations {
		base := fmt.Sprintf("revocations[%d]", i)
		if rv.Path != "" {
			base = rv.Path
		}
		r := Revocation{Reason: rv.Reason}
		if rv.UUID == nil && rv.Hostname == nil {
			bad(rv.Pos, base, "a revocation needs a uuid or a hostname")
		}
		if u := rv.UUID; u != nil {
			if !uuidRE.MatchString(u.Value) {
				bad(u.Pos, base+".uuid", "%q is not a UUID in canonical lower-case form (0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11)", u.Value)
			}
			if j, dup := uuids[u.Value]; dup {
				bad(u.Pos, base+".uuid", "uuid %s is already revoked by %s", u.Value, s.revocationPath(j))
			}
			uuids[u.Value] = i
			r.UUID = u.Value
		}
		if hv := rv.Hostname; hv != nil {
			h, err := NormalizeHostname(hv.Value)
			if err != nil {
				bad(hv.Pos, base+".hostname", "%v", err)
			} else {
				if j, dup := p.revokedHosts[h]; dup {
					bad(hv.Pos, base+".hostname", "hostname %s is already revoked by %s", h, s.revocationPath(j))
				} else {
					p.revokedHosts[h] = i
				}
				r.Hostname = h
			}
		}
		p.revocations = append(p.revocations, r)
	}

	for i, ts := range s.Tests {
		base := fmt.Sprintf("tests[%d]", i)
		if ts.Path != "" {
			base = ts.Path
		}
		tc := testCase{index: i, path: base, pos: ts.Pos, hostname: ts.Hostname, ipText: ts.IP.Value, token: ts.Token, expect: ts.Expect}
		a, err := netip.ParseAddr(ts.IP.Value)
		if err != nil {
			bad(ts.IP.Pos, base+".ip", "%q is not an IP address", ts.IP.Value)
		}
		tc.ip = a
		switch ts.Expect {
		case "trusted", "approved", "token", "deny":
		default:
			bad(ts.Pos, base+".expect", "invalid value %q: must be one of \"approved\", \"deny\", \"token\", \"trusted\"", ts.Expect)
		}
		p.tests = append(p.tests, tc)
	}
	p.buildIndexes()
	return p, errs
}

// trustedPath, approvedPath and revocationPath name entry i in messages.
func (s *Spec) trustedPath(i int) string {
	if p := s.Trusted[i].Path; p != "" {
		return p
	}
	return fmt.Sprintf("trusted_enrollment[%d]", i)
}

func (s *Spec) approvedPath(i int) string {
	if p := s.Approved[i].Path; p != "" {
		return p
	}
	return fmt.Sprintf("approved[%d]", i)
}

func (s *Spec) revocationPath(i int) string {
	if p := s.Revocations[i].Path; p != "" {
		return p
	}
	return fmt.Sprintf("revocations[%d]", i)
}

func validReplace(r string) bool {
	return r == "" || r == ReplaceAny || r == ReplaceToken || r == ReplaceProof
}

// replaceOr returns r, or the default "any".
func replaceOr(r string) string {
	if r == "" {
		return ReplaceAny
	}
	return r
}
