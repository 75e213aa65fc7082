package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// TestIssue12Item9RefusesPlainHTTP: vigocli never sends the admin token
// over plain HTTP (security review L8): every command that talks to the
// server refuses a --server (or VIGO_SERVER) that is not https://, with
// exit status 2 and before any connection. A server without a scheme
// (host:port) means https (issue 17): the TLS handshake with the plain
// server fails, and no request, let alone the token, reaches it.
func TestIssue12Item9RefusesPlainHTTP(t *testing.T) {
	var hits atomic.Int32
	var sawToken atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") != "" {
			sawToken.Store(true)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("[]"))
	}))
	defer srv.Close()
	tokenFile, policyDir := clientFiles(t)
	commands := []struct {
		name string
		args []string
	}{
		{"tokens generate", []string{"tokens", "generate", "--pattern", "web1.example.com"}},
		{"tokens list", []string{"tokens", "list"}},
		{"tokens revoke", []string{"tokens", "revoke", "abcdefghij"}},
		{"envoys list", []string{"envoys", "list"}},
		{"envoys show", []string{"envoys", "show", "web1.example.com"}},
		{"envoys revoke", []string{"envoys", "revoke", "web1.example.com", "--reason", "x"}},
		{"envoys rebootstrap", []string{"envoys", "rebootstrap", "web1.example.com"}},
		{"envoys update", []string{"envoys", "update", "web1.example.com", "--version", "v1.2.3"}},
		{"audit", []string{"audit"}},
		{"policy status", []string{"policy", "status"}},
		{"policy sync", []string{"policy", "sync"}},
		{"policy diff --server-envoys", []string{"policy", "diff", policyDir, policyDir, "--server-envoys"}},
	}
	servers := []struct {
		name string
		url  string
		code int
		msg  string
	}{
		{"http", srv.URL, 2, "must be an https:// URL"},
		{"HTTP upper case", strings.Replace(srv.URL, "http://", "HTTP://", 1), 2, "must be an https:// URL"},
		{"no scheme", strings.TrimPrefix(srv.URL, "http://"), 1, "cannot reach https://" + strings.TrimPrefix(srv.URL, "http://")},
	}
	for _, s := range servers {
		for _, c := range commands {
			t.Run(s.name+"/"+c.name, func(t *testing.T) {
				var out, errb bytes.Buffer
				args := append([]string{"--server", s.url, "--admin-token-file", tokenFile}, c.args...)
				code := run(&globals{stdout: &out, stderr: &errb}, args)
				if code != s.code || !strings.Contains(errb.String(), s.msg) {
					t.Errorf("exit %d, stderr %q; want %d and %q", code, errb.String(), s.code, s.msg)
				}
			})
		}
	}
	// The environment variable goes through the same check.
	t.Run("VIGO_SERVER", func(t *testing.T) {
		t.Setenv("VIGO_SERVER", srv.URL)
		var out, errb bytes.Buffer
		if code := run(&globals{stdout: &out, stderr: &errb}, []string{"--admin-token-file", tokenFile, "tokens", "list"}); code != 2 {
			t.Errorf("exit %d, stderr %q", code, errb.String())
		}
	})
	if n := hits.Load(); n != 0 || sawToken.Load() {
		t.Fatalf("the plain-HTTP server got %d requests (admin token seen: %v)", n, sawToken.Load())
	}
}

// clientFiles writes an admin token file (not a token any server knows)
// and a minimal policy folder for policy diff.
func clientFiles(t *testing.T) (tokenFile, policyDir string) {
	t.Helper()
	tokenFile = filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte("va_not_a_real_token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	policyDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(policyDir, "policy.cue"), []byte("package policy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return tokenFile, policyDir
}

// evil holds what a terminal must never receive raw: ESC sequences (colour,
// cursor up, OSC title), CR that overwrites a line, a newline and a tab that
// would forge table rows and columns, BEL, DEL, the C1 controls CSI and NEL
// (UTF-8 encoded), and a right-to-left override.
const evil = "A\x1b[31mred\x1b[0m\x1b[1A\x1b]0;title\x07\rover\nfake row\tcol\x7fdel\u009b31m\u0085nel\u202eevil"

// checkTerminalSafe fails when out holds a character that drives a
// terminal: C0 controls other than newline and tab, DEL, C1 controls and
// bidirectional overrides.
func checkTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: invalid UTF-8", what)
	}
	for i, r := range out {
		if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			t.Errorf("%s: raw %U at byte %d: %q", what, r, i, out)
			return
		}
	}
	// A newline sent by the server must not start a line of its own.
	if strings.Contains(out, "\nfake row") {
		t.Errorf("%s: the server's newline forged a line:\n%s", what, out)
	}
}

// evilServer answers every route vigocli uses with evil in each string.
func evilServer(t *testing.T) *httptest.Server {
	t.Helper()
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	envoy := apiv1.Envoy{UUID: evil, Hostname: evil, Status: evil, Method: evil, Rule: evil, PolicyRevision: evil, SourceIP: evil,
		OS: evil, Arch: evil, TokenID: evil, CertSerial: evil, CertNotAfter: at, CreatedAt: at, LastSeen: &at, AgentVersion: evil,
		LastAddr: evil, RevokedAt: &at, RevokedReason: evil, RevokedRevision: evil, ReplacedBy: evil, Rebootstrap: true, UpdateVersion: evil}
	tok := apiv1.Token{ID: evil, Pattern: evil, Note: evil, State: evil, CreatedAt: at, ExpiresAt: at, UsedAt: &at, UsedBy: evil, RevokedAt: &at}
	attempt := &apiv1.PolicyAttempt{Revision: evil, At: at, Valid: false, Kind: "budget", Errors: []apiv1.PolicyError{{File: evil, Line: 1, Col: 2, Path: evil, Message: evil}}}
	status := apiv1.PolicyStatus{Replica: evil, Source: evil, Healthy: false, Reason: evil,
		Active:    &apiv1.PolicyActive{Revision: evil, Name: evil, Subject: evil, Author: evil, AppliedAt: at, Signer: evil},
		Attempted: attempt, Waiting: attempt, LastFetch: &at, FetchError: evil, Evaluating: evil, EvaluatingSince: &at, EvalLimits: evil,
		Conditions: []apiv1.Condition{{Type: apiv1.ConditionReady, Status: evil, Reason: evil, Message: evil, LastTransitionTime: at}},
		Suspended:  &apiv1.PolicyHold{Reason: evil, By: evil, At: at}, Pinned: &apiv1.PolicyHold{Revision: evil, Reason: evil, By: evil, At: at}}
	routes := map[string]any{
		"GET /api/v1/audit": []apiv1.AuditEvent{{ID: 1, At: at, Type: evil, Result: evil, Hostname: evil, SourceIP: evil, Method: evil, Rule: evil,
			Revision: evil, TokenID: evil, EnvoyUUID: evil, Reason: evil, Replica: evil, Details: map[string]string{evil: evil}}},
		"GET /api/v1/envoys":                []apiv1.Envoy{envoy},
		"GET /api/v1/envoys/{id}":           envoy,
		"POST /api/v1/envoys/{id}/{action}": envoy,
		"GET /api/v1/tokens":                []apiv1.Token{tok},
		"POST /api/v1/tokens":               apiv1.TokenCreated{ID: evil, Token: evil, Pattern: evil, Note: evil, ExpiresAt: at, Command: evil},
		"DELETE /api/v1/tokens/{id}":        tok,
		"GET /api/v1/policy/status":         status,
		"POST /api/v1/policy/sync":          apiv1.PolicySyncResult{Status: status},
		"POST /api/v1/policy/{control}":     status,
		"GET /api/v1/policy/history": []apiv1.PolicyHistoryEntry{{Revision: evil, Name: evil, Subject: evil, Author: evil, Signer: evil,
			AppliedAt: at, Replica: evil}},
		"GET /api/v1/envoys/refused-by-json": nil,
	}
	mux := http.NewServeMux()
	for pattern, body := range routes {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if body == nil {
				w.WriteHeader(http.StatusConflict)
				json.NewEncoder(w).Encode(apiv1.Error{Error: evil})
				return
			}
			json.NewEncoder(w).Encode(body)
		})
	}
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestIssue12Item4TerminalControlsEscaped: whatever the server sends,
// vigocli's output holds no terminal control character (security review
// L10): tables and text show them as visible \uXXXX escapes (a newline in
// a field cannot forge a row), and -o json keeps every value exactly,
// escaped. The server is a crafted one because the real server refuses
// most of these characters at its edge; the client must not rely on that.
func TestIssue12Item4TerminalControlsEscaped(t *testing.T) {
	srv := evilServer(t)
	tokenFile, policyDir := clientFiles(t)
	commands := []struct {
		name string
		args []string
		// decode, for -o json, is what the output must decode to exactly.
		decode func() any
	}{
		{"tokens generate", []string{"tokens", "generate", "--pattern", "x"}, func() any { return &apiv1.TokenCreated{} }},
		{"tokens list", []string{"tokens", "list"}, func() any { return &[]apiv1.Token{} }},
		{"tokens revoke", []string{"tokens", "revoke", "x"}, func() any { return &apiv1.Token{} }},
		{"envoys list", []string{"envoys", "list"}, func() any { return &[]apiv1.Envoy{} }},
		{"envoys show", []string{"envoys", "show", "x"}, func() any { return &apiv1.Envoy{} }},
		{"envoys revoke", []string{"envoys", "revoke", "x", "--reason", "r"}, func() any { return &apiv1.Envoy{} }},
		{"envoys update", []string{"envoys", "update", "x", "--version", "v1"}, func() any { return &apiv1.Envoy{} }},
		{"audit", []string{"audit"}, func() any { return &[]apiv1.AuditEvent{} }},
		{"policy status", []string{"policy", "status"}, func() any { return &apiv1.PolicyStatus{} }},
		{"policy sync", []string{"policy", "sync"}, func() any { return &apiv1.PolicyStatus{} }},
		{"policy suspend", []string{"policy", "suspend", "--reason", "r"}, func() any { return &apiv1.PolicyStatus{} }},
		{"policy pin", []string{"policy", "pin", "x"}, func() any { return &apiv1.PolicyStatus{} }},
		{"policy history", []string{"policy", "history"}, func() any { return &[]apiv1.PolicyHistoryEntry{} }},
		{"policy diff --server-envoys", []string{"policy", "diff", policyDir, policyDir, "--server-envoys"}, nil},
		{"server refusal", []string{"envoys", "show", "refused-by-json"}, nil},
	}
	for _, c := range commands {
		for _, output := range []string{"table", "json"} {
			t.Run(c.name+"/"+output, func(t *testing.T) {
				var out, errb bytes.Buffer
				args := append([]string{"--server", srv.URL, "--insecure", "--admin-token-file", tokenFile, "-o", output}, c.args...)
				code := run(&globals{stdout: &out, stderr: &errb}, args)
				if code == 2 {
					t.Fatalf("usage error: %s", errb.String())
				}
				checkTerminalSafe(t, "stdout", out.String())
				checkTerminalSafe(t, "stderr", errb.String())
				if output != "json" || c.decode == nil {
					return
				}
				got := c.decode()
				if err := json.Unmarshal(out.Bytes(), got); err != nil {
					t.Fatalf("-o json is not JSON: %v\n%s", err, out.String())
				}
				if !strings.Contains(mustJSON(t, got), mustJSON(t, evil)) {
					t.Errorf("-o json lost the server's value %q:\n%s", evil, out.String())
				}
			})
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestIssue12Item4AuditFromRealRegistration is the review's repro (L10)
// against the real server: an unauthenticated registration whose
// previous_uuid carries a newline and ESC[31m, then vigocli audit.
func TestIssue12Item4AuditFromRealRegistration(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	req := servertest.NewIdentity(t, "evil.nomatch.test").Req
	req.PreviousUUID = "x\ntime=2026 level=ERROR msg=\"FAKE\" \x1b[31mred"
	req.PreviousSignature = "AAAA"
	if code, body := in.Register(t, req); code/100 != 4 {
		t.Fatalf("register: HTTP %d %s", code, body)
	}
	for _, output := range []string{"table", "json"} {
		code, out, errs := vigocli(t, in, "audit", "--since", "1h", "-o", output)
		if code != 0 {
			t.Fatalf("audit -o %s: exit %d: %s", output, code, errs)
		}
		checkTerminalSafe(t, "audit -o "+output, out)
		if output == "table" && strings.Contains(out, "\ntime=2026") {
			t.Errorf("audit: the registration forged a line:\n%s", out)
		}
	}
}
