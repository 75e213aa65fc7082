package policy

import (
	"fmt"
	"net/netip"
)

type testCase struct {
	index    int
	path     string // tests[INDEX] or tests_by_name.NAME
	pos      Pos
	hostname string
	ipText   string
	ip       netip.Addr
	token    bool
	expect   string
}

// TestFailure is a case of the policy's tests: that got another outcome
// than expected.
type TestFailure struct {
	// Index is the position of the case among the policy's tests.
	Index int
	// Path is the case's CUE path: tests[INDEX] or tests_by_name.NAME.
	Path string
	// File, Line and Col locate the case.
	File      string
	Line, Col int
	// Hostname, IP and Token are the inputs of the case.
	Hostname, IP string
	Token        bool
	// Expect is the expected outcome: "trusted", "approved", "token" or "deny".
	Expect string
	// Got is the decision the policy made.
	Got Decision
}

// Outcome returns the method of d, or "deny".
func Outcome(d Decision) string {
	if !d.Allowed {
		return "deny"
	}
	return d.Method
}

// Err returns the failure as an Error located at the test case.
func (f TestFailure) Err() *Error {
	rule := f.Got.Rule
	if rule == "" {
		rule = "none"
	}
	tok := ""
	if f.Token {
		tok = " with a token"
	}
	return &Error{
		File: f.File, Line: f.Line, Col: f.Col,
		Path: f.Path,
		Msg: fmt.Sprintf("%s from %s%s: expected %s, got %s (rule: %s): %s",
			f.Hostname, f.IP, tok, f.Expect, Outcome(f.Got), rule, f.Got.Reason),
	}
}

// RunTests decides every case of the policy's tests and returns those that
// got another outcome than expected. A case with token: true presents a token
// bound to exactly its hostname.
func (p *Policy) RunTests() []TestFailure {
	if p == nil {
		return nil
	}
	var out []TestFailure
	for _, tc := range p.tests {
		req := Request{Hostname: tc.hostname, SourceIP: tc.ip}
		if tc.token {
			req.Token = &TokenInfo{ID: "test", Pattern: tc.hostname}
		}
		d := p.Decide(req)
		if Outcome(d) == tc.expect {
			continue
		}
		out = append(out, TestFailure{
			Index: tc.index, Path: tc.path, File: tc.pos.File, Line: tc.pos.Line, Col: tc.pos.Col,
			Hostname: tc.hostname, IP: tc.ipText, Token: tc.token, Expect: tc.expect, Got: d,
		})
	}
	return out
}
