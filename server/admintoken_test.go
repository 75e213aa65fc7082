package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// statePaths are the state files of a server started by servertest.
func statePaths(in *servertest.Instance) server.StatePaths {
	cfg := &server.Config{}
	cfg.Server.DataDir = in.DataDir
	return cfg.StatePaths()
}

// adminStatus is the status of an admin request made with tok.
func adminStatus(t *testing.T, in *servertest.Instance, tok string) int {
	t.Helper()
	saved := in.AdminToken
	defer func() { in.AdminToken = saved }()
	in.AdminToken = tok
	code, _ := in.Do(t, "GET", "/api/v1/tokens", nil, true)
	return code
}

// TestAdminTokenRotate (issue 17, item 5): a rotation takes effect on the
// running server without a restart, the previous token stays valid for
// the grace period only, the rotation is audited, and a corrupt hash
// file never locks the operators out.
func TestAdminTokenRotate(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	p := statePaths(in)
	first := in.AdminToken

	r, err := server.RotateAdminToken(p, "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Token == first || r.PreviousUntil.IsZero() {
		t.Fatalf("rotation = %+v: want a new token and an end for the previous one", r)
	}
	if b, _ := os.ReadFile(p.AdminToken); strings.TrimSpace(string(b)) != r.Token {
		t.Errorf("the token file holds %q, not the new token", b)
	}
	if code := adminStatus(t, in, r.Token); code != 200 {
		t.Errorf("new token: HTTP %d, want 200 without a restart", code)
	}
	if code := adminStatus(t, in, first); code != 200 {
		t.Errorf("previous token within its grace period: HTTP %d, want 200", code)
	}
	if code := adminStatus(t, in, "va_"+strings.Repeat("x", 52)); code != 401 {
		t.Errorf("another token: HTTP %d, want 401", code)
	}

	// The same token again changes nothing (another replica's copy).
	again, err := server.RotateAdminToken(p, r.Token+"\n", 0, time.Now())
	if err != nil || !again.Unchanged {
		t.Fatalf("rotate to the current token = %+v, %v: want Unchanged", again, err)
	}
	if code := adminStatus(t, in, first); code != 200 {
		t.Errorf("a no-op rotation ended the previous token's grace: HTTP %d", code)
	}

	// Without a grace period the previous token ends at once.
	second := r.Token
	r, err = server.RotateAdminToken(p, "", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, old := range []string{first, second} {
		if code := adminStatus(t, in, old); code != 401 {
			t.Errorf("an old token after a rotation with --grace 0: HTTP %d, want 401", code)
		}
	}
	if code := adminStatus(t, in, r.Token); code != 200 {
		t.Errorf("new token: HTTP %d", code)
	}

	// A corrupt hash file: the last good token stays in use.
	if err := os.WriteFile(p.AdminTokenHash, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := adminStatus(t, in, r.Token); code != 200 {
		t.Errorf("after the hash file was corrupted: HTTP %d, want the last good token to stay valid", code)
	}

	in.AdminToken = r.Token
	code, body := in.Do(t, "GET", "/api/v1/audit?type=admin_token.rotated&order=newest", nil, true)
	if code != 200 || strings.Count(string(body), "admin_token.rotated") != 2 {
		t.Errorf("audit of the two rotations: HTTP %d %s", code, body)
	}
}

// TestAdminTokenRotateRefusals: bad input changes nothing.
func TestAdminTokenRotateRefusals(t *testing.T) {
	dir := t.TempDir()
	cfg := &server.Config{}
	cfg.Server.DataDir = dir
	p := cfg.StatePaths()
	if _, err := server.RotateAdminToken(p, "", time.Hour, time.Now()); err == nil || !strings.Contains(err.Error(), "no admin token to rotate") {
		t.Errorf("rotate without a server's files: %v", err)
	}
	if err := os.WriteFile(p.AdminToken, []byte("va_"+strings.Repeat("a", 52)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := server.RotateAdminToken(p, "short", time.Hour, time.Now()); err == nil {
		t.Error("a malformed new token was accepted")
	}
	if _, err := server.RotateAdminToken(p, "", -time.Second, time.Now()); err == nil {
		t.Error("a negative grace period was accepted")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != filepath.Base(p.AdminToken) {
		t.Errorf("refused rotations wrote files: %v", ents)
	}
}
