package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// vigocli runs the CLI in-process against a real server.
func vigocli(t *testing.T, in *servertest.Instance, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdout: &out, stderr: &errb}
	base := []string{"--server", in.URL, "--ca-file", filepath.Join(in.DataDir, "tls", "ca"), "--admin-token-file", in.AdminTokenFile}
	code = run(g, append(base, args...))
	return code, out.String(), errb.String()
}

func TestAdminCommandsAgainstServer(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})

	code, out, errs := vigocli(t, in, "tokens", "generate", "--pattern", "web1.example.com", "--ttl", "2h", "--note", "rack 4", "-o", "json")
	if code != 0 {
		t.Fatalf("tokens generate: exit %d: %s", code, errs)
	}
	var tok apiv1.TokenCreated
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Token, "vt_"+tok.ID+".") || !strings.Contains(tok.Command, "export VIGO_TOKEN="+tok.Token+";") || !strings.Contains(tok.Command, "curl -sSfk --pinnedpubkey") {
		t.Fatalf("generate output: %+v", tok)
	}
	code, out, _ = vigocli(t, in, "tokens", "generate", "--pattern", "db1.example.com")
	if code != 0 || !strings.Contains(out, "shown once") || !strings.Contains(out, "| sudo --preserve-env=VIGO_TOKEN sh -s -- --ca-fingerprint ") {
		t.Fatalf("tokens generate (table): %d %s", code, out)
	}

	code, out, _ = vigocli(t, in, "tokens", "list")
	if code != 0 || !strings.Contains(out, tok.ID) || !strings.Contains(out, "rack 4") || strings.Contains(out, tok.Token) {
		t.Fatalf("tokens list: %d\n%s", code, out)
	}

	req := servertest.NewIdentity(t, "web1.example.com").Req
	req.Token = tok.Token
	if c, body := in.Register(t, req); c != 200 {
		t.Fatalf("register: %d %s", c, body)
	}
	code, out, _ = vigocli(t, in, "envoys", "list")
	if code != 0 || !strings.Contains(out, "web1.example.com") || !strings.Contains(out, "token "+tok.ID) || !strings.Contains(out, "local@sha256:") {
		t.Fatalf("envoys list: %d\n%s", code, out)
	}
	code, out, _ = vigocli(t, in, "envoys", "show", "web1.example.com", "-o", "json")
	var e map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &e) != nil {
		t.Fatalf("envoys show: %d %s", code, out)
	}
	for _, k := range []string{"uuid", "hostname", "status", "method", "rule", "policy_revision", "source_ip", "created_at", "last_seen"} {
		if _, ok := e[k]; !ok {
			t.Errorf("envoys show -o json lacks %q", k)
		}
	}
	code, out, _ = vigocli(t, in, "envoys", "show", "web1.example.com")
	if code != 0 || !strings.Contains(out, "Policy revision:") || !strings.Contains(out, "Method:") {
		t.Fatalf("envoys show: %d\n%s", code, out)
	}
	code, out, _ = vigocli(t, in, "audit", "--since", "1h")
	if code != 0 || !strings.Contains(out, "registration") || !strings.Contains(out, "token.created") {
		t.Fatalf("audit: %d\n%s", code, out)
	}
	code, out, _ = vigocli(t, in, "policy", "status")
	if code != 0 || !strings.Contains(out, "healthy") {
		t.Fatalf("policy status: %d\n%s", code, out)
	}

	// Errors from the server are shown as worded, with a non-zero exit.
	code, _, errs = vigocli(t, in, "tokens", "revoke", tok.ID)
	if code != 1 || !strings.Contains(errs, "already used or revoked") {
		t.Fatalf("revoke a used token: %d %s", code, errs)
	}
	code, _, errs = vigocli(t, in, "envoys", "revoke", "web1.example.com")
	if code != 2 || !strings.Contains(errs, "--reason is required") {
		t.Fatalf("revoke without reason: %d %s", code, errs)
	}
	code, out, errs = vigocli(t, in, "envoys", "revoke", "web1.example.com", "--reason", "decommissioned")
	if code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("envoys revoke: %d %s %s", code, out, errs)
	}
	code, _, errs = vigocli(t, in, "envoys", "show", "nosuch.example.com")
	if code != 1 || !strings.Contains(errs, "no envoy with uuid or active hostname") {
		t.Fatalf("show unknown: %d %s", code, errs)
	}

	// No credential: a usage error that says what to do.
	var out2, errb bytes.Buffer
	empty := filepath.Join(t.TempDir(), "none")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code = run(&globals{stdout: &out2, stderr: &errb}, []string{"--server", in.URL, "--insecure", "--admin-token-file", empty, "tokens", "list"})
	if code != 2 || !strings.Contains(errb.String(), "no admin token") {
		t.Fatalf("without a token: %d %s", code, errb.String())
	}
	// A wrong token: the server's refusal.
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("va_wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	code = run(&globals{stdout: &out2, stderr: &errb}, []string{"--server", in.URL, "--insecure", "--admin-token-file", bad, "envoys", "list"})
	if code != 1 || !strings.Contains(errb.String(), "admin credential is not valid") {
		t.Fatalf("with a wrong token: %d %s", code, errb.String())
	}
}

// TestAdminTokensCLI: vigocli admin-tokens create a read-only token for
// CI, which reads (envoys, policy status, explain) and is refused changes;
// audit names the actors; a revoked token stops working.
func TestAdminTokensCLI(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	code, out, errs := vigocli(t, in, "admin-tokens", "create", "--name", "ci-github", "--role", "read-only", "-o", "json")
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, errs)
	}
	var tok apiv1.AdminTokenCreated
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatal(err)
	}
	code, out, _ = vigocli(t, in, "admin-tokens", "create", "--name", "alice", "--role", "admin")
	if code != 0 || !strings.Contains(out, `Admin token "alice" with the role admin (shown once, keep it secret):`) {
		t.Fatalf("create alice: %d\n%s", code, out)
	}
	// -q prints the token alone, for a file.
	code, out, _ = vigocli(t, in, "admin-tokens", "create", "--name", "bob", "-q")
	if code != 0 || !regexp.MustCompile(`^va_\S+\n$`).MatchString(out) {
		t.Fatalf("create -q: %d %q; want the token alone on a line", code, out)
	}
	roFile := filepath.Join(t.TempDir(), "ci.token")
	if err := os.WriteFile(roFile, []byte(tok.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ro := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		base := []string{"--server", in.URL, "--ca-file", filepath.Join(in.DataDir, "tls", "ca"), "--admin-token-file", roFile}
		code := run(&globals{stdout: &out, stderr: &errb}, append(base, args...))
		return code, out.String(), errb.String()
	}
	for _, args := range [][]string{
		{"envoys", "list"},
		{"policy", "status"},
		{"audit", "--since", "1h"},
		{"policy", "explain", "--against-server", "--hostname", "a.approved.test", "--ip", "192.0.2.1"},
		{"version", "--check-server"},
	} {
		if code, out, errs := ro(args...); code != 0 {
			t.Errorf("read-only %v: exit %d\n%s\n%s", args, code, out, errs)
		}
	}
	for _, args := range [][]string{
		{"tokens", "generate", "--pattern", "a.example.com"},
		{"policy", "sync"},
		{"admin-tokens", "list"},
	} {
		code, _, errs := ro(args...)
		if code != 1 || !strings.Contains(errs, `admin token "ci-github" has the role read-only`) || !strings.Contains(errs, "needs the role admin (HTTP 403)") {
			t.Errorf("read-only %v: exit %d: %s", args, code, errs)
		}
	}

	code, out, _ = vigocli(t, in, "admin-tokens", "list")
	if code != 0 || !strings.Contains(out, "ci-github") || !strings.Contains(out, "read-only") || strings.Contains(out, tok.Token) {
		t.Errorf("list: %d\n%s", code, out)
	}
	code, out, _ = vigocli(t, in, "audit", "--since", "1h")
	if code != 0 || !regexp.MustCompile(`admin_token\.created\s+ok\s+admin\s`).MatchString(out) {
		t.Errorf("audit shows no actor:\n%s", out)
	}
	code, out, errs = vigocli(t, in, "admin-tokens", "revoke", "ci-github")
	if code != 0 || !strings.Contains(out, `revoked admin token "ci-github" (read-only`) {
		t.Fatalf("revoke: %d %s %s", code, out, errs)
	}
	if code, _, errs := ro("envoys", "list"); code != 1 || !strings.Contains(errs, "admin credential is not valid") {
		t.Errorf("a revoked token: %d %s", code, errs)
	}
	if code, _, errs := vigocli(t, in, "admin-tokens", "create"); code != 2 || !strings.Contains(errs, "--name is required") {
		t.Errorf("create without a name: %d %s", code, errs)
	}
}
