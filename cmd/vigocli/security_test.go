package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestIssue12Item9RefusesPlainHTTP: vigocli never sends the admin token
// over plain HTTP (security review L8): every command that talks to the
// server refuses a --server (or VIGO_SERVER) that is not https://, with
// exit status 2 and before any connection.
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
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte("va_not_a_real_token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	policyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(policyDir, "policy.cue"), []byte("package policy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
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
	}{
		{"http", srv.URL},
		{"HTTP upper case", strings.Replace(srv.URL, "http://", "HTTP://", 1)},
		{"no scheme", strings.TrimPrefix(srv.URL, "http://")},
	}
	for _, s := range servers {
		for _, c := range commands {
			t.Run(s.name+"/"+c.name, func(t *testing.T) {
				var out, errb bytes.Buffer
				args := append([]string{"--server", s.url, "--admin-token-file", tokenFile}, c.args...)
				code := run(&globals{stdout: &out, stderr: &errb}, args)
				if code != 2 || !strings.Contains(errb.String(), "must be an https:// URL") {
					t.Errorf("exit %d, stderr %q; want 2 and a refusal of a non-https server", code, errb.String())
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
