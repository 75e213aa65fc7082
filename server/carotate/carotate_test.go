package carotate_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/carotate"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

func newRotator(t *testing.T) (*carotate.Rotator, *ca.CA, store.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlitestore.Open(t.Context(), dir+"/vigo.db", sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	authority, err := ca.LoadOrCreate(ca.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	r, err := carotate.New(carotate.Config{Store: st, CA: authority, Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	return r, authority, st
}

func TestRollback(t *testing.T) {
	ctx := t.Context()
	r, authority, st := newRotator(t)
	old := authority.Certificate()
	if res, err := r.Rollback(ctx); err != nil || res.Changed {
		t.Fatalf("rollback with no rotation = %+v, %v; want a no-op", res, err)
	}
	if _, err := r.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Activate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if authority.Certificate().Equal(old) {
		t.Fatal("activate: the new CA does not sign")
	}
	if _, err := r.Prepare(ctx); !errors.Is(err, carotate.ErrOutOfOrder) {
		t.Fatalf("prepare during an active rotation: %v, want ErrOutOfOrder", err)
	}
	// Active -> prepared: the old CA signs again, both trusted.
	if res, err := r.Rollback(ctx); err != nil || !res.Changed {
		t.Fatalf("rollback from active = %+v, %v", res, err)
	}
	s, _ := r.Status(ctx)
	if s.Phase != ca.PhasePrepared || !authority.Certificate().Equal(old) || len(authority.Trusted()) != 2 {
		t.Fatalf("after rollback from active: phase %q, %d trusted", s.Phase, len(authority.Trusted()))
	}
	// Prepared -> idle: the next CA is gone.
	if res, err := r.Rollback(ctx); err != nil || !res.Changed {
		t.Fatalf("rollback from prepared = %+v, %v", res, err)
	}
	s, _ = r.Status(ctx)
	if s.Phase != ca.PhaseIdle || len(s.CAs) != 1 || !s.CAs[0].Certificate.Equal(old) || len(authority.Trusted()) != 1 {
		t.Fatalf("after rollback from prepared: %+v", s)
	}
	// A new rotation can start again.
	if res, err := r.Prepare(ctx); err != nil || !res.Changed {
		t.Fatalf("prepare after a rollback = %+v, %v", res, err)
	}
	evs, err := st.ListAudit(ctx, s.UpdatedAt.AddDate(-1, 0, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		if strings.HasPrefix(e.Type, "ca.") {
			got = append(got, e.Type+":"+e.Details["from"])
		}
	}
	if want := "ca.prepared:,ca.activated:,ca.rolled_back:active,ca.rolled_back:prepared,ca.prepared:"; strings.Join(got, ",") != want {
		t.Errorf("audit = %v, want %s", got, want)
	}
}

// TestActivateNeedsTheKey: a replica without the next CA's key file
// refuses to activate and says what to copy.
func TestActivateNeedsTheKey(t *testing.T) {
	ctx := t.Context()
	r, authority, _ := newRotator(t)
	if _, err := r.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	next := authority.Trusted()[1]
	_, keyFile := authority.Config().RotationPaths(ca.Fingerprint(next))
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	_, err := r.Activate(ctx, false)
	if err == nil || !strings.Contains(err.Error(), keyFile) || !strings.Contains(err.Error(), "copy it") {
		t.Fatalf("activate without the key: %v", err)
	}
	if s, _ := r.Status(ctx); s.Phase != ca.PhasePrepared {
		t.Fatalf("phase after a refused activate: %q", s.Phase)
	}
	// Finish with nothing to finish is a no-op; finish when prepared is
	// out of order.
	if _, err := r.Finish(ctx, false); !errors.Is(err, carotate.ErrOutOfOrder) {
		t.Fatalf("finish when prepared: %v", err)
	}
}
