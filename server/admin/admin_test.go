package admin_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/bootstrap"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

func TestCallerAllows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		caller       admin.Caller
		read, change bool
	}{
		{"admin", admin.Caller{Name: "admin", Role: admin.RoleAdmin}, true, true},
		{"read-only", admin.Caller{Name: "ci", Role: admin.RoleReadOnly}, true, false},
		{"no role", admin.Caller{Name: "x"}, false, false},
		{"unknown role", admin.Caller{Name: "x", Role: "root"}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.caller.Allows(admin.Read); got != tc.read {
				t.Errorf("Allows(Read) = %v, want %v", got, tc.read)
			}
			if got := tc.caller.Allows(admin.Change); got != tc.change {
				t.Errorf("Allows(Change) = %v, want %v", got, tc.change)
			}
		})
	}
	if admin.CallerFrom(context.Background()).Allows(admin.Read) {
		t.Error("a context without a caller is allowed to read")
	}
}

func TestServerToken(t *testing.T) {
	t.Parallel()
	auth := admin.ServerToken{Hash: sha256.Sum256([]byte("va_secret"))}
	tests := []struct {
		name, credential string
		ok               bool
	}{
		{"the token", "va_secret", true},
		{"with spaces", " va_secret\n", true},
		{"another", "va_secreT", false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := auth.Authenticate(t.Context(), tc.credential)
			if tc.ok {
				if err != nil || c != (admin.Caller{Name: admin.ServerTokenName, Role: admin.RoleAdmin, ServerTokenHash: auth.Hash}) {
					t.Errorf("Authenticate = %+v, %v; want the admin", c, err)
				}
				return
			}
			if !errors.Is(err, admin.ErrInvalidCredential) {
				t.Errorf("Authenticate = %+v, %v; want ErrInvalidCredential", c, err)
			}
		})
	}
}

// testFingerprint is the CA fingerprint of the one-liners of these tests.
var testFingerprint = strings.Repeat("ab", 32)

// oneLiner renders the one-liner as the server does, for a server with an
// operator's certificate (no key pin).
func oneLiner(token string) (string, error) {
	return bootstrap.OneLiner(bootstrap.OneLinerParams{ServerURL: "https://vigo.test:8443", Token: token, CAFingerprint: testFingerprint})
}

func TestBootstrapCommandWithoutToken(t *testing.T) {
	ops, _ := newOps(t)
	want := "curl -sSf https://vigo.test:8443/bootstrap | sudo sh -s -- --ca-fingerprint " + testFingerprint
	if got := ops.BootstrapCommand(); got != want {
		t.Errorf("BootstrapCommand() = %q, want %q", got, want)
	}
}

func newOps(t *testing.T) (*admin.Ops, store.Store) {
	t.Helper()
	st, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "vigo.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	ops, err := admin.New(admin.Config{Store: st, Replica: "r1", Now: func() time.Time { return now }, OneLiner: oneLiner})
	if err != nil {
		t.Fatal(err)
	}
	return ops, st
}

func TestCreateToken(t *testing.T) {
	t.Parallel()
	ops, st := newOps(t)
	by := admin.Caller{Name: "alice", Role: admin.RoleAdmin}
	bad := []struct{ name, pattern, ttl, want string }{
		{"no pattern", " ", "", "pattern: required"},
		{"bad glob", "a[b", "", "pattern: "},
		{"bad ttl", "a.example.com", "soon", `ttl: "soon" is not a positive duration`},
		{"negative ttl", "a.example.com", "-1h", "ttl: "},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ops.CreateToken(t.Context(), by, admin.TokenRequest{Pattern: tc.pattern, TTL: tc.ttl})
			if !errors.Is(err, admin.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CreateToken = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
	tok, err := ops.CreateToken(t.Context(), by, admin.TokenRequest{Pattern: "Web1.Example.com.", TTL: "2h", Note: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Token.Pattern != "web1.example.com" || tok.Token.ExpiresAt.Sub(tok.Token.CreatedAt) != 2*time.Hour {
		t.Errorf("token = %+v, want pattern web1.example.com valid 2h", tok.Token)
	}
	if want := "export VIGO_TOKEN=" + tok.Secret + "; curl -sSf https://vigo.test:8443/bootstrap | sudo --preserve-env=VIGO_TOKEN sh -s -- --ca-fingerprint " + testFingerprint; tok.Command != want {
		t.Errorf("Command = %q, want %q", tok.Command, want)
	}
	evs, err := st.QueryAudit(t.Context(), store.AuditQuery{Types: []string{store.AuditTokenCreated}})
	if err != nil || len(evs) != 1 || evs[0].Actor != "alice" || strings.Contains(evs[0].Details["pattern"]+evs[0].Reason, tok.Secret) {
		t.Errorf("audit = %+v, %v; want one token.created by alice, without the secret", evs, err)
	}
	if _, err := ops.RevokeToken(t.Context(), by, tok.Secret); err != nil {
		t.Errorf("RevokeToken(whole token): %v", err)
	}
	if _, err := ops.RevokeToken(t.Context(), by, tok.Token.ID); !errors.Is(err, admin.ErrConflict) {
		t.Errorf("RevokeToken again = %v, want ErrConflict", err)
	}
	if _, err := ops.RevokeToken(t.Context(), by, "zzzzzzzzzz"); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("RevokeToken(unknown) = %v, want ErrNotFound", err)
	}
}
