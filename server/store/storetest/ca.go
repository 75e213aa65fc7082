package storetest

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vigo-enroll/vigo/server/store"
)

func testCAState(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.GetCAState(ctx)
	if err != nil || !cmp.Equal(store.CAState{}, got, cmpOpts...) {
		t.Fatalf("GetCAState(never set) = %+v, %v", got, err)
	}
	cur, next := []byte("-----BEGIN CERTIFICATE-----\ncur\n"), []byte("-----BEGIN CERTIFICATE-----\nnext\n")
	prepared := store.CAState{Phase: store.CAPhasePrepared, Current: cur, Next: next, UpdatedAt: t0.In(berlin)}
	ev := func(typ string) store.AuditEvent {
		return store.AuditEvent{At: t0, Type: typ, Result: "ok", Actor: "alice", Details: map[string]string{"phase": "x"}}
	}
	if err := s.SetCAState(ctx, 0, prepared, ev(store.AuditCAPrepared)); err != nil {
		t.Fatal(err)
	}
	want := prepared
	want.Version, want.UpdatedAt = 1, t0
	if got, err := s.GetCAState(ctx); err != nil || !cmp.Equal(want, got, cmpOpts...) {
		t.Errorf("GetCAState = %+v, %v, want %+v", got, err, want)
	}
	// A stale version is a conflict, and writes nothing (not even audit).
	if err := s.SetCAState(ctx, 0, store.CAState{Current: cur}, ev(store.AuditCARolledBack)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("SetCAState(stale version 0) = %v, want ErrConflict", err)
	}
	if err := s.SetCAState(ctx, 7, store.CAState{Current: cur}, ev(store.AuditCARolledBack)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("SetCAState(stale version 7) = %v, want ErrConflict", err)
	}
	finished := store.CAState{Phase: store.CAPhaseIdle, Current: next, UpdatedAt: t0.Add(time.Hour)}
	if err := s.SetCAState(ctx, 1, finished, ev(store.AuditCAFinished)); err != nil {
		t.Fatal(err)
	}
	want = finished
	want.Version = 2
	if got, err := s.GetCAState(ctx); err != nil || !cmp.Equal(want, got, cmpOpts...) || got.Next != nil {
		t.Errorf("GetCAState = %+v, %v, want %+v", got, err, want)
	}
	evs, err := s.ListAudit(ctx, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		if strings.HasPrefix(e.Type, "ca.") {
			types = append(types, e.Type)
			if e.Actor != "alice" {
				t.Errorf("audit %s actor = %q", e.Type, e.Actor)
			}
		}
	}
	if diff := cmp.Diff([]string{store.AuditCAPrepared, store.AuditCAFinished}, types); diff != "" {
		t.Errorf("audit in the same transaction (-want +got):\n%s", diff)
	}
}

// testCAStateConcurrently: of replicas changing the state from the same
// version, exactly one wins (the others get ErrConflict).
func testCAStateConcurrently(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.SetCAState(ctx, 0, store.CAState{Current: []byte("a")}, store.AuditEvent{At: t0, Type: store.AuditCAPrepared, Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.SetCAState(ctx, 1, store.CAState{Phase: store.CAPhasePrepared, Current: []byte("a"), Next: []byte{byte(i)}},
				store.AuditEvent{At: t0, Type: store.AuditCAPrepared, Result: "ok"})
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("SetCAState: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent SetCAState from the same version succeeded, want 1", won)
	}
}

func testCountBySerialPrefix(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i, serial := range []string{"5cabcdef01", "5cabcdef02", "5c12345678", "4f00"} {
		e := newEnvoy(i+1, "h"+string(rune('a'+i))+".example.com")
		e.CertSerial = serial
		enroll(t, s, e)
	}
	// A revoked envoy is not counted.
	e := newEnvoy(9, "revoked.example.com")
	e.CertSerial = "5cabcdef09"
	enroll(t, s, e)
	if _, err := s.RevokeEnvoys(ctx, []store.Revocation{{UUID: e.UUID, Reason: "test", At: t0}}); err != nil {
		t.Fatal(err)
	}
	for prefix, want := range map[string]int{"": 4, "5c": 3, "5cabcdef": 2, "5c1234567899": 0, "4f00": 1} {
		if got, err := s.CountActiveEnvoysBySerialPrefix(ctx, prefix); err != nil || got != want {
			t.Errorf("CountActiveEnvoysBySerialPrefix(%q) = %d, %v, want %d", prefix, got, err, want)
		}
	}
	for _, bad := range []string{"5C", "5c%", "_", "x'"} {
		if _, err := s.CountActiveEnvoysBySerialPrefix(ctx, bad); err == nil {
			t.Errorf("CountActiveEnvoysBySerialPrefix(%q) = nil error", bad)
		}
	}
}
