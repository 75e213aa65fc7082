package grpcapi

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
	"github.com/vigo-enroll/vigo/server/store/storetest"
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
	d := newDirectory(st, func() time.Time { return clock })
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

// countingStore counts the reads the directory makes, and can run a hook
// in the middle of ListEnvoys (a change arriving during the read).
type countingStore struct {
	store.Store
	gets    int
	filters []store.EnvoyFilter
	listed  int
	during  func()
}

func (c *countingStore) GetEnvoy(ctx context.Context, uuid string) (store.Envoy, error) {
	c.gets++
	return c.Store.GetEnvoy(ctx, uuid)
}

func (c *countingStore) ListEnvoys(ctx context.Context, f store.EnvoyFilter) ([]store.Envoy, error) {
	c.filters = append(c.filters, f)
	es, err := c.Store.ListEnvoys(ctx, f)
	c.listed += len(es)
	if c.during != nil {
		c.during()
	}
	return es, err
}

func enrolledStore(t *testing.T, n int) *countingStore {
	t.Helper()
	return enrolledStoreAt(t, n, nil)
}

// enrolledStoreAt is enrolledStore with the store's clock.
func enrolledStoreAt(t *testing.T, n int, now func() time.Time) *countingStore {
	t.Helper()
	st, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "db"), sqlitestore.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for i := range n {
		u := fmt.Sprintf("u%d", i)
		if _, err := st.Enroll(t.Context(), store.EnrollParams{Envoy: store.Envoy{UUID: u, Hostname: u + ".example.com", PublicKey: make([]byte, 32), CertSerial: "aa"}, Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	return &countingStore{Store: st}
}

// TestDirectoryRefreshReadsChanges: a refresh reads what changed since the
// previous one, not every envoy, and leaves unchanged entries alone.
func TestDirectoryRefreshReadsChanges(t *testing.T) {
	ctx := t.Context()
	clock := storetest.NewClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	st := enrolledStoreAt(t, 50, clock.Now)
	d := newDirectory(st, clock.Now)
	for i := range 50 {
		if _, err := d.get(ctx, fmt.Sprintf("u%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if f := st.filters[0]; f.ChangedSince.IsZero() || clock.Now().Sub(f.ChangedSince) < refreshOverlap {
		t.Fatalf("first refresh filter %+v, want changes since the directory was made, less the overlap", f)
	}
	// As if the previous refresh had been long after these enrollments.
	clock.Advance(time.Second)
	d.since = clock.Now()
	clock.Advance(time.Second)
	before, _ := d.m.Load("u7")
	if _, err := st.RevokeEnvoys(ctx, []store.Revocation{{UUID: "u3", Reason: "gone"}}); err != nil {
		t.Fatal(err)
	}
	st.listed = 0
	if err := d.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if st.listed != 1 {
		t.Errorf("refresh read %d envoys, want the 1 that changed", st.listed)
	}
	if en, _ := d.get(ctx, "u3"); en.status != store.StatusRevoked {
		t.Errorf("u3 after refresh: %+v, want revoked", en)
	}
	if after, _ := d.m.Load("u7"); after != before {
		t.Error("an unchanged entry was replaced")
	}
	if want := clock.Now().Add(-refreshOverlap); d.since.After(want) {
		t.Errorf("next refresh starts at %v, want at least the overlap back (%v)", d.since, want)
	}
}

// TestDirectoryWarm: after warm, check-ins of active envoys read no store;
// an invalidation during warm drops what warm stored.
func TestDirectoryWarm(t *testing.T) {
	ctx := t.Context()
	st := enrolledStore(t, 20)
	if _, err := st.RevokeEnvoys(ctx, []store.Revocation{{UUID: "u0", Reason: "gone"}}); err != nil {
		t.Fatal(err)
	}
	d := newDirectory(st, time.Now)
	n, err := d.warm(ctx)
	if err != nil || n != 19 {
		t.Fatalf("warm = %d, %v; want the 19 active envoys", n, err)
	}
	for i := 1; i < 20; i++ {
		if en, err := d.get(ctx, fmt.Sprintf("u%d", i)); err != nil || en.status != store.StatusActive {
			t.Fatalf("u%d: %+v %v", i, en, err)
		}
	}
	if st.gets != 0 {
		t.Errorf("%d store reads after warm, want 0", st.gets)
	}
	if en, _ := d.get(ctx, "u0"); en.status != store.StatusRevoked || st.gets != 1 {
		t.Errorf("revoked u0 = %+v after %d reads, want read from the store once", en, st.gets)
	}

	d2 := newDirectory(st, time.Now)
	st.during = func() { d2.invalidate("u5") }
	if n, err := d2.warm(ctx); err != nil || n != 0 {
		t.Errorf("warm with an invalidation during the read = %d, %v; want 0", n, err)
	}
	if _, ok := d2.m.Load("u5"); ok {
		t.Error("u5 cached from a read older than its invalidation")
	}
}
