package grpcapi

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

// TestDirectory checks the cache against a real store: changes made behind
// its back (another replica) show after refresh; a serial mismatch is
// confirmed against the store; EnvoyChanged-style invalidation is at once.
func TestDirectory(t *testing.T) {
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clock := time.Now()
	d := &directory{store: st, now: func() time.Time { return clock }}
	for _, u := range []string{"u1", "u2"} {
		if _, err := st.Enroll(ctx, store.EnrollParams{Envoy: store.Envoy{UUID: u, Hostname: u + ".example.com", PublicKey: make([]byte, 32), CertSerial: "aa"}, Now: clock}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(u string) *entry {
		t.Helper()
		en, err := d.get(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		return en
	}
	if en := get("u1"); !en.known || en.status != store.StatusActive {
		t.Fatalf("u1: %+v", en)
	}
	get("u2")
	if en := get("nobody"); en.known {
		t.Fatalf("unknown envoy cached as known: %+v", en)
	}

	// Another replica revokes u1 and renews u2: not seen until refresh.
	if _, err := st.RevokeEnvoys(ctx, []store.Revocation{{UUID: "u1", Reason: "gone", At: clock}}); err != nil {
		t.Fatal(err)
	}
	if err := st.RenewCertificate(ctx, store.RenewParams{UUID: "u2", OldSerial: "aa", NewSerial: "bb", NotAfter: clock.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if en := get("u1"); en.status != store.StatusActive {
		t.Fatalf("u1 changed before refresh: %+v", en)
	}
	// The renewed serial is confirmed against the store, but not more
	// than once a second.
	if en, _ := d.confirm(ctx, get("u2"), "bb"); en.serial != "aa" {
		t.Fatalf("confirmed within a second of loading: %+v", en)
	}
	clock = clock.Add(2 * time.Second)
	if en, _ := d.confirm(ctx, get("u2"), "bb"); en.serial != "bb" {
		t.Fatalf("not confirmed: %+v", en)
	}
	if err := d.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if en := get("u1"); en.status != store.StatusRevoked || en.reason != "gone" {
		t.Fatalf("u1 after refresh: %+v", en)
	}
	// Invalidation: the next get reads the store.
	if err := st.SetEnvoyFlags(ctx, "u2", store.EnvoyFlags{Rebootstrap: true}, store.AuditEvent{Type: store.AuditEnvoyRebootstrap, At: clock}); err != nil {
		t.Fatal(err)
	}
	d.invalidate("u2")
	if en := get("u2"); !en.flags.Rebootstrap {
		t.Fatalf("u2 after invalidate: %+v", en)
	}
}

func TestShortRevision(t *testing.T) {
	for in, want := range map[string]string{
		"3f2a9c1d0e4b5a6978":            "3f2a9c1",
		"local@sha256:59f820990133f96a": "local@sha256:59f8209",
		"abc":                           "abc",
	} {
		if got := shortRevision(in); got != want {
			t.Errorf("shortRevision(%q) = %q, want %q", in, got, want)
		}
	}
}
