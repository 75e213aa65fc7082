// Package storetest is the conformance suite that every store.Store
// implementation must pass. A backend's test calls Run with a function that
// opens a fresh, empty store for each subtest:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "vigo.db"), sqlitestore.Options{})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Every subtest opens its own store, so subtests run in parallel. The
// guarantees under test are the ones documented on store.Store; the
// concurrency subtests race real goroutines against the real database.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vigo-enroll/vigo/server/store"
)

// Opener returns a new, empty store for each call, whose clock is now (nil:
// time.Now), and arranges for it to be closed when t ends.
type Opener func(t *testing.T, now func() time.Time) store.Store

// NewClock returns a manual clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Clock is a manual clock for the tests that step time.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Run runs the whole suite.
func Run(t *testing.T, open Opener) {
	clocked := []struct {
		name string
		fn   func(t *testing.T, s store.Store, c *Clock)
	}{
		{"ListEnvoysChangedSince", testChangedSince},
	}
	for _, tt := range clocked {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := NewClock(t0.Add(24 * time.Hour))
			tt.fn(t, open(t, c.Now), c)
		})
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"EnvoyRoundTrip", testEnvoyRoundTrip},
		{"TimesAreUTC", testTimesAreUTC},
		{"EnrollAuditAndFields", testEnrollAudit},
		{"TokenRoundTrip", testTokenRoundTrip},
		{"TokenConsumedOnceConcurrently", testTokenConsumedOnce},
		{"TokenRefused", testTokenRefused},
		{"RevokeToken", testRevokeToken},
		{"HostnameTaken", testHostnameTaken},
		{"HostnameUniqueConcurrently", testHostnameUniqueConcurrent},
		{"ForceReplaces", testForceReplaces},
		{"ForceReplaceConcurrently", testForceConcurrent},
		{"RevokedNeverReactivated", testRevokedNeverReactivated},
		{"RevokeEnvoys", testRevokeEnvoys},
		{"SetEnvoyFlags", testSetEnvoyFlags},
		{"RenewCertificate", testRenewCertificate},
		{"RecordCheckins", testRecordCheckins},
		{"ListEnvoys", testListEnvoys},
		{"QueryEnvoys", testQueryEnvoys},
		{"CountFleet", testCountFleet},
		{"QueryAudit", testQueryAudit},
		{"CountAudit", testCountAudit},
		{"Audit", testAudit},
		{"AdminTokens", testAdminTokens},
		{"PolicyRevision", testPolicyRevision},
		{"PolicyRefusals", testPolicyRefusals},
		{"PolicyHistory", testPolicyHistory},
		{"PolicyControl", testPolicyControl},
		{"Prune", testPrune},
		{"SeenNonce", testSeenNonce},
		{"SeenNonceConcurrently", testSeenNonceConcurrent},
		{"CAState", testCAState},
		{"CAStateConcurrently", testCAStateConcurrently},
		{"CountActiveEnvoysBySerialPrefix", testCountBySerialPrefix},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each subtest has its own store
			tc.fn(t, open(t, nil))
		})
	}
}

// t0 is the suite's reference time. It has millisecond precision, the
// least a store keeps, so values round-trip exactly.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 123_000_000, time.UTC)

// berlin is a fixed non-UTC zone: times given in it must come back in UTC.
var berlin = time.FixedZone("CET", 3600)

// cmpOpts compares records, treating nil and empty slices and maps alike.
var cmpOpts = []cmp.Option{cmpopts.EquateEmpty()}

func uuidN(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }

func newEnvoy(i int, hostname string) store.Envoy {
	return store.Envoy{
		UUID:           uuidN(i),
		Hostname:       hostname,
		PublicKey:      []byte(fmt.Sprintf("%032d", i)),
		CertSerial:     fmt.Sprintf("%x", 1000+i),
		CertNotAfter:   t0.Add(365 * 24 * time.Hour),
		OS:             "linux",
		Arch:           "amd64",
		SourceIP:       "192.0.2.10",
		Method:         "approved",
		Rule:           "approved[0]",
		PolicyRevision: "c0ffee",
		CreatedAt:      t0.Add(time.Duration(i) * time.Millisecond),
	}
}

func regAudit(e store.Envoy) store.AuditEvent {
	return store.AuditEvent{
		At:        e.CreatedAt,
		Type:      store.AuditRegistration,
		Result:    "allowed",
		Hostname:  e.Hostname,
		SourceIP:  e.SourceIP,
		Method:    e.Method,
		Rule:      e.Rule,
		Revision:  e.PolicyRevision,
		TokenID:   e.TokenID,
		EnvoyUUID: e.UUID,
		Replica:   "r1",
	}
}

func enroll(t *testing.T, s store.Store, e store.Envoy) store.Envoy {
	t.Helper()
	if _, err := s.Enroll(t.Context(), store.EnrollParams{Envoy: e, Now: e.CreatedAt, Audit: regAudit(e)}); err != nil {
		t.Fatalf("Enroll(%s, %s): %v", e.UUID, e.Hostname, err)
	}
	e.Status = store.StatusActive
	return e
}

func newToken(id string) store.Token {
	return store.Token{
		ID:         id,
		SecretHash: []byte("$2a$10$not-a-real-hash-" + id),
		Pattern:    "*.example.com",
		Note:       "note " + id,
		CreatedAt:  t0,
		ExpiresAt:  t0.Add(24 * time.Hour),
	}
}

func createToken(t *testing.T, s store.Store, tok store.Token) {
	t.Helper()
	ev := store.AuditEvent{At: tok.CreatedAt, Type: store.AuditTokenCreated, Result: "ok", TokenID: tok.ID}
	if err := s.CreateToken(t.Context(), tok, ev); err != nil {
		t.Fatalf("CreateToken(%s): %v", tok.ID, err)
	}
}

func getEnvoy(t *testing.T, s store.Store, uuid string) store.Envoy {
	t.Helper()
	e, err := s.GetEnvoy(t.Context(), uuid)
	if err != nil {
		t.Fatalf("GetEnvoy(%s): %v", uuid, err)
	}
	return e
}

func listAudit(t *testing.T, s store.Store) []store.AuditEvent {
	t.Helper()
	evs, err := s.ListAudit(t.Context(), time.Time{}, 0)
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	return evs
}

// auditOf returns the events of type typ.
func auditOf(evs []store.AuditEvent, typ string) []store.AuditEvent {
	var out []store.AuditEvent
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// race runs fn(i) for i in [0, n) in n goroutines released at once and
// returns the errors by index.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: err = %v, want %v", what, err, want)
	}
}

func testEnvoyRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	in := newEnvoy(1, "web1.example.com")
	in.TokenID = ""
	in.LastSeen = t0.Add(time.Minute)
	in.AgentVersion = "1.2.3"
	in.LastAddr = "192.0.2.10:4242"
	in.EnvoyFlags = store.EnvoyFlags{Rebootstrap: true, UpdateVersion: "1.2.4", UpdateAllowDowngrade: true}
	in.Status = "revoked" // Enroll sets active
	replaced, err := s.Enroll(ctx, store.EnrollParams{Envoy: in, Now: t0, Audit: regAudit(in)})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if len(replaced) != 0 {
		t.Errorf("Enroll replaced %v, want none", replaced)
	}
	want := in
	want.Status = store.StatusActive
	if diff := cmp.Diff(want, getEnvoy(t, s, in.UUID), cmpOpts...); diff != "" {
		t.Errorf("GetEnvoy mismatch (-want +got):\n%s", diff)
	}
	got, err := s.GetActiveEnvoyByHostname(ctx, in.Hostname)
	if err != nil {
		t.Fatalf("GetActiveEnvoyByHostname: %v", err)
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("GetActiveEnvoyByHostname mismatch (-want +got):\n%s", diff)
	}

	_, err = s.GetEnvoy(ctx, uuidN(99))
	wantErr(t, "GetEnvoy(unknown)", err, store.ErrNotFound)
	_, err = s.GetActiveEnvoyByHostname(ctx, "unknown.example.com")
	wantErr(t, "GetActiveEnvoyByHostname(unknown)", err, store.ErrNotFound)
}

func testTimesAreUTC(t *testing.T, s store.Store) {
	local := time.Date(2026, 5, 6, 7, 8, 9, 987_654_321, berlin)
	e := newEnvoy(1, "tz.example.com")
	e.CreatedAt = local
	e.CertNotAfter = local.Add(time.Hour)
	enroll(t, s, e)
	got := getEnvoy(t, s, e.UUID)
	for _, tc := range []struct {
		name     string
		got, set time.Time
	}{
		{"CreatedAt", got.CreatedAt, e.CreatedAt},
		{"CertNotAfter", got.CertNotAfter, e.CertNotAfter},
	} {
		if tc.got.Location() != time.UTC {
			t.Errorf("%s location = %v, want UTC", tc.name, tc.got.Location())
		}
		// At least millisecond precision is kept.
		if d := tc.got.Sub(tc.set).Abs(); d >= time.Millisecond {
			t.Errorf("%s = %v, want %v within 1ms", tc.name, tc.got, tc.set)
		}
	}
	for _, ev := range listAudit(t, s) {
		if ev.At.Location() != time.UTC {
			t.Errorf("audit At location = %v, want UTC", ev.At.Location())
		}
	}
	if got.RevokedAt != (time.Time{}) || got.LastSeen != (time.Time{}) {
		t.Errorf("unset times = %v, %v, want zero", got.RevokedAt, got.LastSeen)
	}
}

func testEnrollAudit(t *testing.T, s store.Store) {
	e := newEnvoy(1, "web1.example.com")
	e.Method = "token"
	e.TokenID = "tok1"
	tok := newToken("tok1")
	createToken(t, s, tok)
	audit := regAudit(e)
	audit.Details = map[string]string{"os": "linux", "force": "false"}
	_, err := s.Enroll(t.Context(), store.EnrollParams{Envoy: e, TokenID: "tok1", Now: t0.Add(time.Hour), Audit: audit})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	regs := auditOf(listAudit(t, s), store.AuditRegistration)
	if len(regs) != 1 {
		t.Fatalf("registration events = %d, want 1", len(regs))
	}
	audit.ID = regs[0].ID
	if diff := cmp.Diff(audit, regs[0], cmpOpts...); diff != "" {
		t.Errorf("registration event mismatch (-want +got):\n%s", diff)
	}
	got, err := s.GetToken(t.Context(), "tok1")
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	want := tok
	want.UsedAt = t0.Add(time.Hour)
	want.UsedBy = e.UUID
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("used token mismatch (-want +got):\n%s", diff)
	}
}

func testTokenRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := newToken("a")
	b := newToken("b")
	b.CreatedAt = t0.Add(time.Minute).In(berlin)
	b.Note = ""
	createToken(t, s, a)
	createToken(t, s, b)

	got, err := s.GetToken(ctx, "a")
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if diff := cmp.Diff(a, got, cmpOpts...); diff != "" {
		t.Errorf("GetToken mismatch (-want +got):\n%s", diff)
	}
	_, err = s.GetToken(ctx, "nope")
	wantErr(t, "GetToken(unknown)", err, store.ErrNotFound)

	err = s.CreateToken(ctx, newToken("a"), store.AuditEvent{At: t0, Type: store.AuditTokenCreated})
	wantErr(t, "CreateToken(duplicate)", err, store.ErrConflict)

	list, err := s.ListTokens(ctx)
	if err != nil {
		t.Fatalf("ListTokens: %v", err)
	}
	b.CreatedAt = b.CreatedAt.UTC()
	if diff := cmp.Diff([]store.Token{b, a}, list, cmpOpts...); diff != "" {
		t.Errorf("ListTokens (newest first) mismatch (-want +got):\n%s", diff)
	}
	if n := len(auditOf(listAudit(t, s), store.AuditTokenCreated)); n != 2 {
		t.Errorf("token.created events = %d, want 2 (none for the failed create)", n)
	}
}

func testTokenConsumedOnce(t *testing.T, s store.Store) {
	const n = 100
	createToken(t, s, newToken("once"))
	now := t0.Add(time.Hour)
	errs := race(n, func(i int) error {
		e := newEnvoy(i, fmt.Sprintf("host%d.example.com", i))
		e.Method, e.TokenID = "token", "once"
		_, err := s.Enroll(context.Background(), store.EnrollParams{Envoy: e, TokenID: "once", Now: now, Audit: regAudit(e)})
		return err
	})
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("Enroll %d and %d both succeeded with one token", winner, i)
			}
			winner = i
		case !errors.Is(err, store.ErrTokenUnavailable):
			t.Errorf("Enroll %d: err = %v, want nil or ErrTokenUnavailable", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no Enroll succeeded")
	}
	tok, err := s.GetToken(t.Context(), "once")
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if tok.UsedBy != uuidN(winner) || !tok.UsedAt.Equal(now) {
		t.Errorf("token used by %q at %v, want %q at %v", tok.UsedBy, tok.UsedAt, uuidN(winner), now)
	}
	envoys, err := s.ListEnvoys(t.Context(), store.EnvoyFilter{})
	if err != nil {
		t.Fatalf("ListEnvoys: %v", err)
	}
	if len(envoys) != 1 || envoys[0].UUID != uuidN(winner) {
		t.Errorf("envoys = %d (%v), want only the winner %s", len(envoys), envoys, uuidN(winner))
	}
	if regs := auditOf(listAudit(t, s), store.AuditRegistration); len(regs) != 1 {
		t.Errorf("registration events = %d, want 1", len(regs))
	}
}

func testTokenRefused(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := t0.Add(time.Hour)
	expired := newToken("expired")
	expired.ExpiresAt = now // expiry is exclusive: a token expiring now is refused
	revoked := newToken("revoked")
	used := newToken("used")
	for _, tok := range []store.Token{expired, revoked, used} {
		createToken(t, s, tok)
	}
	if err := s.RevokeToken(ctx, "revoked", t0.Add(time.Minute), store.AuditEvent{At: t0, Type: store.AuditTokenRevoked}); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	first := newEnvoy(100, "first.example.com")
	if _, err := s.Enroll(ctx, store.EnrollParams{Envoy: first, TokenID: "used", Now: now, Audit: regAudit(first)}); err != nil {
		t.Fatalf("Enroll with fresh token: %v", err)
	}
	auditBefore := listAudit(t, s)

	for i, id := range []string{"expired", "revoked", "used", "unknown"} {
		t.Run(id, func(t *testing.T) {
			e := newEnvoy(i, fmt.Sprintf("refused%d.example.com", i))
			_, err := s.Enroll(ctx, store.EnrollParams{Envoy: e, TokenID: id, Now: now, Audit: regAudit(e)})
			wantErr(t, "Enroll", err, store.ErrTokenUnavailable)
			_, err = s.GetEnvoy(ctx, e.UUID)
			wantErr(t, "GetEnvoy after refused Enroll", err, store.ErrNotFound)
		})
	}
	if diff := cmp.Diff(auditBefore, listAudit(t, s), cmpOpts...); diff != "" {
		t.Errorf("refused enrollments changed the audit trail (-before +after):\n%s", diff)
	}
	tok, err := s.GetToken(ctx, "expired")
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if !tok.UsedAt.IsZero() || tok.UsedBy != "" {
		t.Errorf("expired token marked used: %+v", tok)
	}
}

func testRevokeToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	createToken(t, s, newToken("t1"))
	createToken(t, s, newToken("t2"))
	at := t0.Add(time.Minute).In(berlin)
	ev := store.AuditEvent{At: at, Type: store.AuditTokenRevoked, Result: "ok", TokenID: "t1"}
	if err := s.RevokeToken(ctx, "t1", at, ev); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	got, err := s.GetToken(ctx, "t1")
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if !got.RevokedAt.Equal(at) || got.RevokedAt.Location() != time.UTC {
		t.Errorf("RevokedAt = %v, want %v in UTC", got.RevokedAt, at)
	}
	wantErr(t, "RevokeToken(again)", s.RevokeToken(ctx, "t1", at, ev), store.ErrTokenUnavailable)
	wantErr(t, "RevokeToken(unknown)", s.RevokeToken(ctx, "nope", at, ev), store.ErrNotFound)

	e := newEnvoy(1, "web1.example.com")
	if _, err := s.Enroll(ctx, store.EnrollParams{Envoy: e, TokenID: "t2", Now: t0, Audit: regAudit(e)}); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	wantErr(t, "RevokeToken(used)", s.RevokeToken(ctx, "t2", at, ev), store.ErrTokenUnavailable)
	if n := len(auditOf(listAudit(t, s), store.AuditTokenRevoked)); n != 1 {
		t.Errorf("token.revoked events = %d, want 1", n)
	}
}

func testHostnameTaken(t *testing.T, s store.Store) {
	ctx := t.Context()
	enroll(t, s, newEnvoy(1, "web1.example.com"))
	createToken(t, s, newToken("tok"))
	auditBefore := listAudit(t, s)

	e := newEnvoy(2, "web1.example.com")
	replaced, err := s.Enroll(ctx, store.EnrollParams{Envoy: e, TokenID: "tok", Now: t0, Audit: regAudit(e)})
	wantErr(t, "Enroll(same hostname)", err, store.ErrHostnameTaken)
	if len(replaced) != 0 {
		t.Errorf("failed Enroll replaced %v", replaced)
	}
	// Nothing was written: the token is still usable, no envoy, no audit.
	tok, err := s.GetToken(ctx, "tok")
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if !tok.UsedAt.IsZero() {
		t.Errorf("token consumed by a failed Enroll: %+v", tok)
	}
	_, err = s.GetEnvoy(ctx, e.UUID)
	wantErr(t, "GetEnvoy(refused)", err, store.ErrNotFound)
	if diff := cmp.Diff(auditBefore, listAudit(t, s), cmpOpts...); diff != "" {
		t.Errorf("failed Enroll changed the audit trail (-before +after):\n%s", diff)
	}
	if got := getEnvoy(t, s, uuidN(1)); got.Status != store.StatusActive {
		t.Errorf("first envoy status = %q, want active", got.Status)
	}
}

func testHostnameUniqueConcurrent(t *testing.T, s store.Store) {
	const n = 50
	errs := race(n, func(i int) error {
		e := newEnvoy(i, "same.example.com")
		_, err := s.Enroll(context.Background(), store.EnrollParams{Envoy: e, Now: t0, Audit: regAudit(e)})
		return err
	})
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrHostnameTaken):
			t.Errorf("Enroll %d: err = %v, want nil or ErrHostnameTaken", i, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d enrollments succeeded, want exactly 1", ok)
	}
	active, err := s.ListEnvoys(t.Context(), store.EnvoyFilter{Status: store.StatusActive, Hostname: "same.example.com"})
	if err != nil {
		t.Fatalf("ListEnvoys: %v", err)
	}
	if len(active) != 1 {
		t.Errorf("active envoys = %d, want 1", len(active))
	}
}

func testForceReplaces(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := enroll(t, s, newEnvoy(1, "web1.example.com"))
	other := enroll(t, s, newEnvoy(3, "web2.example.com"))
	now := t0.Add(time.Hour)
	e := newEnvoy(2, "web1.example.com")
	audit := regAudit(e)
	replaced, err := s.Enroll(ctx, store.EnrollParams{Envoy: e, Force: true, Now: now, Audit: audit})
	if err != nil {
		t.Fatalf("Enroll(force): %v", err)
	}
	wantOld := old
	wantOld.Status = store.StatusRevoked
	wantOld.RevokedAt = now
	wantOld.RevokedReason = "replaced"
	wantOld.ReplacedBy = e.UUID
	if diff := cmp.Diff([]store.Envoy{wantOld}, replaced, cmpOpts...); diff != "" {
		t.Errorf("replaced mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantOld, getEnvoy(t, s, old.UUID), cmpOpts...); diff != "" {
		t.Errorf("old envoy mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(other, getEnvoy(t, s, other.UUID), cmpOpts...); diff != "" {
		t.Errorf("envoy of another hostname changed (-want +got):\n%s", diff)
	}
	got, err := s.GetActiveEnvoyByHostname(ctx, "web1.example.com")
	if err != nil {
		t.Fatalf("GetActiveEnvoyByHostname: %v", err)
	}
	if got.UUID != e.UUID {
		t.Errorf("active envoy = %s, want %s", got.UUID, e.UUID)
	}
	revs := auditOf(listAudit(t, s), store.AuditEnvoyRevoked)
	if len(revs) != 1 {
		t.Fatalf("envoy.revoked events = %d, want 1", len(revs))
	}
	wantEv := store.AuditEvent{
		ID: revs[0].ID, At: now, Type: store.AuditEnvoyRevoked, Result: "ok", Hostname: "web1.example.com",
		SourceIP: audit.SourceIP, Revision: audit.Revision, EnvoyUUID: old.UUID, Reason: "replaced", Replica: "r1",
		Details: map[string]string{"replaced_by": e.UUID},
	}
	if diff := cmp.Diff(wantEv, revs[0], cmpOpts...); diff != "" {
		t.Errorf("envoy.revoked event mismatch (-want +got):\n%s", diff)
	}

	// Force with no active envoy simply enrolls.
	fresh := newEnvoy(4, "fresh.example.com")
	replaced, err = s.Enroll(ctx, store.EnrollParams{Envoy: fresh, Force: true, Now: now, Audit: regAudit(fresh)})
	if err != nil || len(replaced) != 0 {
		t.Errorf("Enroll(force, new hostname) = %v, %v; want no replacement, nil", replaced, err)
	}

	// A rebootstrap replaces with its own reason.
	again := newEnvoy(5, "fresh.example.com")
	replaced, err = s.Enroll(ctx, store.EnrollParams{Envoy: again, Force: true, ReplaceReason: "rebootstrapped", Now: now, Audit: regAudit(again)})
	if err != nil || len(replaced) != 1 || replaced[0].UUID != fresh.UUID {
		t.Fatalf("Enroll(rebootstrap) = %v, %v; want %s replaced", replaced, err, fresh.UUID)
	}
	old, err = s.GetEnvoy(ctx, fresh.UUID)
	if err != nil || old.RevokedReason != "rebootstrapped" || old.ReplacedBy != again.UUID {
		t.Errorf("rebootstrapped envoy: reason %q replaced by %q (%v); want rebootstrapped, %s", old.RevokedReason, old.ReplacedBy, err, again.UUID)
	}
}

func testForceConcurrent(t *testing.T, s store.Store) {
	const n = 20
	enroll(t, s, newEnvoy(1000, "force.example.com"))
	errs := race(n, func(i int) error {
		e := newEnvoy(i, "force.example.com")
		_, err := s.Enroll(context.Background(), store.EnrollParams{Envoy: e, Force: true, Now: t0.Add(time.Hour), Audit: regAudit(e)})
		return err
	})
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrHostnameTaken), errors.Is(err, store.ErrConflict):
		default:
			t.Errorf("Enroll(force) %d: err = %v, want nil, ErrHostnameTaken or ErrConflict", i, err)
		}
	}
	if ok == 0 {
		t.Error("no forced enrollment succeeded")
	}
	active, err := s.ListEnvoys(t.Context(), store.EnvoyFilter{Status: store.StatusActive, Hostname: "force.example.com"})
	if err != nil {
		t.Fatalf("ListEnvoys: %v", err)
	}
	if len(active) != 1 {
		t.Fatalf("active envoys = %d, want 1", len(active))
	}
	all, err := s.ListEnvoys(t.Context(), store.EnvoyFilter{Hostname: "force.example.com"})
	if err != nil {
		t.Fatalf("ListEnvoys: %v", err)
	}
	if len(all) != ok+1 {
		t.Errorf("envoys = %d, want %d (the first plus one per success)", len(all), ok+1)
	}
	for _, e := range all {
		if e.Status == store.StatusRevoked && (e.RevokedReason != "replaced" || e.ReplacedBy == "") {
			t.Errorf("revoked envoy %s: reason %q, replaced by %q", e.UUID, e.RevokedReason, e.ReplacedBy)
		}
	}
	if n := len(auditOf(listAudit(t, s), store.AuditEnvoyRevoked)); n != ok {
		t.Errorf("envoy.revoked events = %d, want %d", n, ok)
	}
}

func testRevokedNeverReactivated(t *testing.T, s store.Store) {
	ctx := t.Context()
	e := enroll(t, s, newEnvoy(1, "web1.example.com"))
	at := t0.Add(time.Hour)
	if _, err := s.RevokeEnvoys(ctx, []store.Revocation{{UUID: e.UUID, Reason: "stolen", At: at}}); err != nil {
		t.Fatalf("RevokeEnvoys: %v", err)
	}
	// Enrolling the same UUID again fails, whether or not the hostname is free.
	again := newEnvoy(1, "web1.example.com")
	_, err := s.Enroll(ctx, store.EnrollParams{Envoy: again, Now: at, Audit: regAudit(again)})
	wantErr(t, "Enroll(revoked uuid)", err, store.ErrConflict)
	again.Hostname = "other.example.com"
	_, err = s.Enroll(ctx, store.EnrollParams{Envoy: again, Force: true, Now: at, Audit: regAudit(again)})
	wantErr(t, "Enroll(revoked uuid, other hostname, force)", err, store.ErrConflict)
	if got := getEnvoy(t, s, e.UUID); got.Status != store.StatusRevoked {
		t.Errorf("status = %q, want revoked", got.Status)
	}
	wantErr(t, "SetEnvoyFlags(revoked)",
		s.SetEnvoyFlags(ctx, e.UUID, store.EnvoyFlags{Rebootstrap: true}, store.AuditEvent{At: at, Type: store.AuditEnvoyRebootstrap}),
		store.ErrEnvoyRevoked)
	wantErr(t, "RenewCertificate(revoked)",
		s.RenewCertificate(ctx, store.RenewParams{UUID: e.UUID, OldSerial: e.CertSerial, NewSerial: "ff", NotAfter: at, Audit: store.AuditEvent{At: at, Type: store.AuditEnvoyRenewed}}),
		store.ErrEnvoyRevoked)

	// Not even once the revoked envoy has been pruned.
	if _, err := s.Prune(ctx, at.Add(time.Hour)); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	_, err = s.GetEnvoy(ctx, e.UUID)
	wantErr(t, "GetEnvoy(pruned)", err, store.ErrNotFound)
	again.Hostname = "web1.example.com"
	_, err = s.Enroll(ctx, store.EnrollParams{Envoy: again, Now: at, Audit: regAudit(again)})
	wantErr(t, "Enroll(pruned revoked uuid)", err, store.ErrConflict)
}

func testRevokeEnvoys(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := enroll(t, s, newEnvoy(1, "a.example.com"))
	b := enroll(t, s, newEnvoy(2, "b.example.com"))
	c := enroll(t, s, newEnvoy(3, "c.example.com"))
	at := t0.Add(time.Hour).In(berlin)
	rs := []store.Revocation{
		{UUID: a.UUID, Reason: "decommissioned", At: at, Replica: "r2"},
		{Hostname: "b.example.com", Reason: "compromised", Revision: "abc123", At: at, Replica: "r2"},
		{UUID: uuidN(99), Reason: "unknown uuid", At: at},
		{Hostname: "nothing.example.com", Reason: "unknown hostname", At: at},
		{Reason: "matches nothing", At: at},
	}
	got, err := s.RevokeEnvoys(ctx, rs)
	if err != nil {
		t.Fatalf("RevokeEnvoys: %v", err)
	}
	wantA, wantB := a, b
	wantA.Status, wantA.RevokedAt, wantA.RevokedReason = store.StatusRevoked, at.UTC(), "decommissioned"
	wantB.Status, wantB.RevokedAt, wantB.RevokedReason, wantB.RevokedRevision = store.StatusRevoked, at.UTC(), "compromised", "abc123"
	if diff := cmp.Diff([]store.Envoy{wantA, wantB}, got, cmpOpts...); diff != "" {
		t.Errorf("RevokeEnvoys mismatch (-want +got):\n%s", diff)
	}
	for _, want := range []store.Envoy{wantA, wantB, c} {
		if diff := cmp.Diff(want, getEnvoy(t, s, want.UUID), cmpOpts...); diff != "" {
			t.Errorf("envoy %s mismatch (-want +got):\n%s", want.UUID, diff)
		}
	}
	revs := auditOf(listAudit(t, s), store.AuditEnvoyRevoked)
	wantEvs := []store.AuditEvent{
		{At: at.UTC(), Type: store.AuditEnvoyRevoked, Result: "ok", Hostname: "a.example.com", EnvoyUUID: a.UUID, Reason: "decommissioned", Replica: "r2"},
		{At: at.UTC(), Type: store.AuditEnvoyRevoked, Result: "ok", Hostname: "b.example.com", EnvoyUUID: b.UUID, Reason: "compromised", Revision: "abc123", Replica: "r2"},
	}
	if diff := cmp.Diff(wantEvs, revs, append(cmpOpts, cmpopts.IgnoreFields(store.AuditEvent{}, "ID"))...); diff != "" {
		t.Errorf("envoy.revoked events mismatch (-want +got):\n%s", diff)
	}

	// Idempotent: revoking again revokes nothing and audits nothing.
	got, err = s.RevokeEnvoys(ctx, rs)
	if err != nil {
		t.Fatalf("RevokeEnvoys(again): %v", err)
	}
	if len(got) != 0 {
		t.Errorf("RevokeEnvoys(again) revoked %d envoys, want 0", len(got))
	}
	if n := len(auditOf(listAudit(t, s), store.AuditEnvoyRevoked)); n != 2 {
		t.Errorf("envoy.revoked events after repeat = %d, want 2", n)
	}
	if diff := cmp.Diff(wantA, getEnvoy(t, s, a.UUID), cmpOpts...); diff != "" {
		t.Errorf("repeat changed a revoked envoy (-want +got):\n%s", diff)
	}

	// A hostname revocation leaves a later active envoy of that hostname
	// alone only until it is applied again.
	b2 := enroll(t, s, newEnvoy(4, "b.example.com"))
	got, err = s.RevokeEnvoys(ctx, []store.Revocation{{Hostname: "b.example.com", Reason: "again", At: at}})
	if err != nil || len(got) != 1 || got[0].UUID != b2.UUID {
		t.Errorf("RevokeEnvoys(hostname with new envoy) = %v, %v; want %s", got, err, b2.UUID)
	}

	got, err = s.RevokeEnvoys(ctx, nil)
	if err != nil || len(got) != 0 {
		t.Errorf("RevokeEnvoys(nil) = %v, %v; want none, nil", got, err)
	}
}

func testSetEnvoyFlags(t *testing.T, s store.Store) {
	ctx := t.Context()
	e := enroll(t, s, newEnvoy(1, "web1.example.com"))
	ev := store.AuditEvent{At: t0, Type: store.AuditEnvoyUpdate, Result: "ok", EnvoyUUID: e.UUID}
	flags := store.EnvoyFlags{Rebootstrap: true, UpdateVersion: "2.0.0", UpdateAllowDowngrade: true}
	if err := s.SetEnvoyFlags(ctx, e.UUID, flags, ev); err != nil {
		t.Fatalf("SetEnvoyFlags: %v", err)
	}
	want := e
	want.EnvoyFlags = flags
	if diff := cmp.Diff(want, getEnvoy(t, s, e.UUID), cmpOpts...); diff != "" {
		t.Errorf("envoy mismatch (-want +got):\n%s", diff)
	}
	if err := s.SetEnvoyFlags(ctx, e.UUID, store.EnvoyFlags{}, ev); err != nil {
		t.Fatalf("SetEnvoyFlags(clear): %v", err)
	}
	if got := getEnvoy(t, s, e.UUID); got.EnvoyFlags != (store.EnvoyFlags{}) {
		t.Errorf("flags after clear = %+v, want none", got.EnvoyFlags)
	}
	wantErr(t, "SetEnvoyFlags(unknown)", s.SetEnvoyFlags(ctx, uuidN(99), flags, ev), store.ErrNotFound)
	if n := len(auditOf(listAudit(t, s), store.AuditEnvoyUpdate)); n != 2 {
		t.Errorf("envoy.update_requested events = %d, want 2", n)
	}
}

func testRenewCertificate(t *testing.T, s store.Store) {
	ctx := t.Context()
	e := enroll(t, s, newEnvoy(1, "web1.example.com"))
	ev := store.AuditEvent{At: t0, Type: store.AuditEnvoyRenewed, Result: "ok", EnvoyUUID: e.UUID}
	notAfter := t0.Add(48 * time.Hour)
	if err := s.RenewCertificate(ctx, store.RenewParams{UUID: e.UUID, OldSerial: e.CertSerial, NewSerial: "abcd", NotAfter: notAfter, Audit: ev}); err != nil {
		t.Fatalf("RenewCertificate: %v", err)
	}
	want := e
	want.CertSerial, want.CertNotAfter = "abcd", notAfter
	if diff := cmp.Diff(want, getEnvoy(t, s, e.UUID), cmpOpts...); diff != "" {
		t.Errorf("after renewal keeping key (-want +got):\n%s", diff)
	}

	// The old serial no longer matches: a concurrent renewal lost.
	err := s.RenewCertificate(ctx, store.RenewParams{UUID: e.UUID, OldSerial: e.CertSerial, NewSerial: "beef", NotAfter: notAfter, Audit: ev})
	wantErr(t, "RenewCertificate(stale serial)", err, store.ErrConflict)

	key := []byte("new-key-new-key-new-key-new-key!")
	if err := s.RenewCertificate(ctx, store.RenewParams{UUID: e.UUID, OldSerial: "abcd", NewSerial: "abce", NotAfter: notAfter.Add(time.Hour), PublicKey: key, Audit: ev}); err != nil {
		t.Fatalf("RenewCertificate(new key): %v", err)
	}
	want.CertSerial, want.CertNotAfter, want.PublicKey = "abce", notAfter.Add(time.Hour), key
	if diff := cmp.Diff(want, getEnvoy(t, s, e.UUID), cmpOpts...); diff != "" {
		t.Errorf("after renewal with new key (-want +got):\n%s", diff)
	}
	err = s.RenewCertificate(ctx, store.RenewParams{UUID: uuidN(99), OldSerial: "x", NewSerial: "y", NotAfter: notAfter, Audit: ev})
	wantErr(t, "RenewCertificate(unknown)", err, store.ErrNotFound)
	if n := len(auditOf(listAudit(t, s), store.AuditEnvoyRenewed)); n != 2 {
		t.Errorf("envoy.renewed events = %d, want 2 (only successes)", n)
	}
}

func testRecordCheckins(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := enroll(t, s, newEnvoy(1, "a.example.com"))
	b := enroll(t, s, newEnvoy(2, "b.example.com"))
	if err := s.RecordCheckins(ctx, nil); err != nil {
		t.Fatalf("RecordCheckins(nil): %v", err)
	}
	t1 := t0.Add(time.Minute).In(berlin)
	// The envoys' clocks (signed timestamps) differ from the server's.
	sig := t1.Add(-30 * time.Second).In(berlin)
	err := s.RecordCheckins(ctx, []store.Checkin{
		{UUID: a.UUID, At: t1, AgentVersion: "1.0.0", Addr: "192.0.2.1:1000", Signed: sig},
		{UUID: b.UUID, At: t1, AgentVersion: "1.0.1", Addr: "192.0.2.2:1000", Signed: sig},
		{UUID: uuidN(99), At: t1, AgentVersion: "9", Addr: "192.0.2.9:1", Signed: sig}, // unknown: ignored
	})
	if err != nil {
		t.Fatalf("RecordCheckins: %v", err)
	}
	// An older check-in of a changes nothing but its newer signed
	// timestamp; a newer one of b wins; within one batch the latest wins
	// whatever the order, and the newest signed timestamp of any.
	err = s.RecordCheckins(ctx, []store.Checkin{
		{UUID: a.UUID, At: t1.Add(-time.Second), AgentVersion: "0.9.0", Addr: "192.0.2.1:999", Signed: sig.Add(5 * time.Second)},
		{UUID: b.UUID, At: t1.Add(2 * time.Second), AgentVersion: "1.1.0", Addr: "192.0.2.2:2000", Signed: sig.Add(time.Second)},
		{UUID: b.UUID, At: t1.Add(time.Second), AgentVersion: "1.0.9", Addr: "192.0.2.2:1500", Signed: sig.Add(3 * time.Second)},
	})
	if err != nil {
		t.Fatalf("RecordCheckins: %v", err)
	}
	wantA, wantB := a, b
	wantA.LastSeen, wantA.AgentVersion, wantA.LastAddr = t1.UTC(), "1.0.0", "192.0.2.1:1000"
	wantA.LastCheckinSigned = sig.Add(5 * time.Second).UTC()
	wantB.LastSeen, wantB.AgentVersion, wantB.LastAddr = t1.Add(2*time.Second).UTC(), "1.1.0", "192.0.2.2:2000"
	wantB.LastCheckinSigned = sig.Add(3 * time.Second).UTC()
	for _, want := range []store.Envoy{wantA, wantB} {
		if diff := cmp.Diff(want, getEnvoy(t, s, want.UUID), cmpOpts...); diff != "" {
			t.Errorf("envoy %s (-want +got):\n%s", want.UUID, diff)
		}
	}
	// An older or no signed timestamp leaves it; a newer check-in
	// without one still records the rest.
	err = s.RecordCheckins(ctx, []store.Checkin{
		{UUID: a.UUID, At: t1.Add(3 * time.Second), AgentVersion: "1.2.0", Addr: "192.0.2.1:3000"},
		{UUID: b.UUID, At: t1.Add(-time.Minute), AgentVersion: "0.1.0", Addr: "192.0.2.2:1", Signed: sig},
	})
	if err != nil {
		t.Fatalf("RecordCheckins: %v", err)
	}
	wantA.LastSeen, wantA.AgentVersion, wantA.LastAddr = t1.Add(3*time.Second).UTC(), "1.2.0", "192.0.2.1:3000"
	for _, want := range []store.Envoy{wantA, wantB} {
		if diff := cmp.Diff(want, getEnvoy(t, s, want.UUID), cmpOpts...); diff != "" {
			t.Errorf("envoy %s after older signed timestamps (-want +got):\n%s", want.UUID, diff)
		}
	}

	// A large batch in one call.
	const n = 2000
	for i := 10; i < 20; i++ {
		enroll(t, s, newEnvoy(i, fmt.Sprintf("bulk%d.example.com", i)))
	}
	batch := make([]store.Checkin, n)
	for i := range batch {
		batch[i] = store.Checkin{UUID: uuidN(10 + i%10), At: t0.Add(time.Hour + time.Duration(i)*time.Millisecond), AgentVersion: "2.0.0", Addr: "192.0.2.3:1"}
	}
	if err := s.RecordCheckins(ctx, batch); err != nil {
		t.Fatalf("RecordCheckins(%d): %v", n, err)
	}
	for i := 10; i < 20; i++ {
		want := batch[n-10+(i-10)].At
		if got := getEnvoy(t, s, uuidN(i)).LastSeen; !got.Equal(want) {
			t.Errorf("envoy %d LastSeen = %v, want %v", i, got, want)
		}
	}
}

// testChangedSince: every change a replica's cache depends on (enrolled,
// revoked, replaced, renewed, flags) makes the envoy match ChangedSince
// from then on; a check-in does not. Changes are stamped with the store's
// clock, a manual one here.
func testChangedSince(t *testing.T, s store.Store, clock *Clock) {
	ctx := t.Context()
	var es []store.Envoy
	for i := range 6 {
		es = append(es, enroll(t, s, newEnvoy(i+1, fmt.Sprintf("c%d.example.com", i+1))))
	}
	changed := func(since time.Time) []string {
		t.Helper()
		got, err := s.ListEnvoys(ctx, store.EnvoyFilter{ChangedSince: since})
		if err != nil {
			t.Fatalf("ListEnvoys(ChangedSince): %v", err)
		}
		var hosts []string
		for _, e := range got {
			hosts = append(hosts, e.Hostname)
		}
		slices.Sort(hosts)
		return hosts
	}
	if got := changed(clock.Now().Add(-time.Hour)); len(got) != 6 {
		t.Errorf("changed in the last hour = %v, want the 6 enrolled", got)
	}
	clock.Advance(time.Second)
	since := clock.Now()
	clock.Advance(time.Second)
	if got := changed(since); len(got) != 0 {
		t.Errorf("changed since before any change = %v, want none", got)
	}

	if err := s.RecordCheckins(ctx, []store.Checkin{{UUID: es[0].UUID, At: time.Now(), AgentVersion: "2", Addr: "192.0.2.1:1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeEnvoys(ctx, []store.Revocation{{UUID: es[1].UUID, Reason: "test", At: t0}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetEnvoyFlags(ctx, es[2].UUID, store.EnvoyFlags{Rebootstrap: true}, store.AuditEvent{At: t0, Type: store.AuditEnvoyUpdate, EnvoyUUID: es[2].UUID}); err != nil {
		t.Fatal(err)
	}
	if err := s.RenewCertificate(ctx, store.RenewParams{UUID: es[3].UUID, OldSerial: es[3].CertSerial, NewSerial: "f00d", NotAfter: t0.Add(time.Hour), Audit: store.AuditEvent{At: t0, Type: store.AuditEnvoyRenewed, EnvoyUUID: es[3].UUID}}); err != nil {
		t.Fatal(err)
	}
	// Replacing c5 changes the old envoy (revoked) and adds a new one.
	repl := newEnvoy(50, "c5.example.com")
	if _, err := s.Enroll(ctx, store.EnrollParams{Envoy: repl, Force: true, Now: t0, Audit: regAudit(repl)}); err != nil {
		t.Fatal(err)
	}
	want := []string{"c2.example.com", "c3.example.com", "c4.example.com", "c5.example.com", "c5.example.com"}
	if got := changed(since); !slices.Equal(got, want) {
		t.Errorf("changed since = %v, want %v (a check-in is not a change; c6 was untouched)", got, want)
	}
	// Filters combine.
	got, err := s.ListEnvoys(ctx, store.EnvoyFilter{ChangedSince: since, Status: store.StatusRevoked})
	if err != nil || len(got) != 2 {
		t.Errorf("revoked and changed since = %d envoys (%v), want 2 (c2 and the replaced c5)", len(got), err)
	}
}

func testListEnvoys(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Created out of UUID order; two share a creation time.
	e3 := newEnvoy(3, "c.example.com")
	e3.CreatedAt = t0
	e1 := newEnvoy(1, "a.example.com")
	e1.CreatedAt = t0.Add(time.Second)
	e2 := newEnvoy(2, "b.example.com")
	e2.CreatedAt = t0.Add(time.Second)
	e4 := newEnvoy(4, "a.example.com")
	e4.CreatedAt = t0.Add(2 * time.Second)
	var all []store.Envoy
	for _, e := range []store.Envoy{e3, e1, e2} {
		all = append(all, enroll(t, s, e))
	}
	e4.CreatedAt = t0.Add(2 * time.Second)
	if _, err := s.Enroll(ctx, store.EnrollParams{Envoy: e4, Force: true, Now: t0.Add(time.Hour), Audit: regAudit(e4)}); err != nil {
		t.Fatalf("Enroll(force): %v", err)
	}
	all[1] = getEnvoy(t, s, e1.UUID) // now revoked
	all = append(all, getEnvoy(t, s, e4.UUID))
	uuids := func(es []store.Envoy) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.UUID)
		}
		return out
	}
	tests := []struct {
		name string
		f    store.EnvoyFilter
		want []string
	}{
		{"all", store.EnvoyFilter{}, uuids(all)},
		{"active", store.EnvoyFilter{Status: store.StatusActive}, []string{e3.UUID, e2.UUID, e4.UUID}},
		{"revoked", store.EnvoyFilter{Status: store.StatusRevoked}, []string{e1.UUID}},
		{"hostname", store.EnvoyFilter{Hostname: "a.example.com"}, []string{e1.UUID, e4.UUID}},
		{"hostname active", store.EnvoyFilter{Hostname: "a.example.com", Status: store.StatusActive}, []string{e4.UUID}},
		{"limit", store.EnvoyFilter{Limit: 2}, []string{e3.UUID, e1.UUID}},
		{"no match", store.EnvoyFilter{Hostname: "zzz"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListEnvoys(ctx, tc.f)
			if err != nil {
				t.Fatalf("ListEnvoys: %v", err)
			}
			if diff := cmp.Diff(tc.want, uuids(got), cmpOpts...); diff != "" {
				t.Errorf("ListEnvoys(%+v) (-want +got):\n%s", tc.f, diff)
			}
		})
	}
	got, err := s.ListEnvoys(ctx, store.EnvoyFilter{})
	if err != nil {
		t.Fatalf("ListEnvoys: %v", err)
	}
	if diff := cmp.Diff(all, got, cmpOpts...); diff != "" {
		t.Errorf("ListEnvoys records (-want +got):\n%s", diff)
	}
}

func testAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	evs := []store.AuditEvent{
		{At: t0.Add(2 * time.Second), Type: store.AuditRegistration, Result: "denied", Hostname: "x.example.com",
			SourceIP: "198.51.100.7", Reason: "no rule matched", Revision: "r1", Replica: "a",
			Details: map[string]string{"os": "linux", "empty": "", "quote": `"x"`}},
		{At: t0, Type: store.AuditPolicyApplied, Result: "ok", Revision: "r1"},
		{At: t0.Add(time.Second).In(berlin), Type: store.AuditPolicyRejected, Result: "rejected", Revision: "r2",
			Details: map[string]string{"error": "policy.cue:1:2: bad"}},
		{At: t0.Add(2 * time.Second), Type: store.AuditTokenCreated, Result: "ok", TokenID: "t1", Method: "m", Rule: "r", EnvoyUUID: "u", Actor: "ci"},
	}
	if err := s.AppendAudit(ctx, evs...); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	if err := s.AppendAudit(ctx); err != nil {
		t.Fatalf("AppendAudit(): %v", err)
	}
	got := listAudit(t, s)
	// Oldest first; equal times in insertion order.
	want := []store.AuditEvent{evs[1], evs[2], evs[0], evs[3]}
	want[1].At = want[1].At.UTC()
	if diff := cmp.Diff(want, got, append(cmpOpts, cmpopts.IgnoreFields(store.AuditEvent{}, "ID"))...); diff != "" {
		t.Errorf("ListAudit mismatch (-want +got):\n%s", diff)
	}
	if len(got) == 4 {
		if !(got[2].ID < got[3].ID) || got[0].ID == 0 {
			t.Errorf("IDs = %d, %d, %d, %d: want assigned and increasing in insertion order", got[0].ID, got[1].ID, got[2].ID, got[3].ID)
		}
		if got[1].Details == nil {
			t.Error("Details lost")
		}
		if got[3].Details != nil {
			t.Errorf("empty Details = %#v, want nil", got[3].Details)
		}
	}

	tests := []struct {
		name  string
		since time.Time
		limit int
		want  []store.AuditEvent
	}{
		{"since inclusive", t0.Add(time.Second), 0, want[1:]},
		{"since in another zone", t0.Add(2 * time.Second).In(berlin), 0, want[2:]},
		{"limit", time.Time{}, 2, want[:2]},
		{"since and limit", t0.Add(time.Second), 1, want[1:2]},
		{"future", t0.Add(time.Hour), 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListAudit(ctx, tc.since, tc.limit)
			if err != nil {
				t.Fatalf("ListAudit: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, append(cmpOpts, cmpopts.IgnoreFields(store.AuditEvent{}, "ID"))...); diff != "" {
				t.Errorf("ListAudit(%v, %d) (-want +got):\n%s", tc.since, tc.limit, diff)
			}
		})
	}
}

func testAdminTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	tok := func(id, name, role string, at time.Time) store.AdminToken {
		return store.AdminToken{ID: id, Name: name, Role: role, SecretHash: []byte("sha256-of-" + id), CreatedAt: at}
	}
	created := func(t store.AdminToken, actor string) store.AuditEvent {
		return store.AuditEvent{At: t.CreatedAt, Type: store.AuditAdminTokenCreated, Result: "ok", TokenID: t.ID, Actor: actor,
			Details: map[string]string{"name": t.Name, "role": t.Role}}
	}
	alice := tok("aaaaaaaaaa", "alice", store.RoleAdmin, t0)
	ci := tok("cccccccccc", "ci", store.RoleReadOnly, t0.Add(time.Second).In(berlin))
	for _, x := range []store.AdminToken{alice, ci} {
		if err := s.CreateAdminToken(ctx, x, created(x, "admin")); err != nil {
			t.Fatalf("CreateAdminToken(%s): %v", x.Name, err)
		}
	}
	ci.CreatedAt = ci.CreatedAt.UTC()
	auditBefore := listAudit(t, s)

	// One active token per name; an id once.
	dup := tok("dddddddddd", "ci", store.RoleAdmin, t0)
	wantErr(t, "CreateAdminToken(same name)", s.CreateAdminToken(ctx, dup, created(dup, "admin")), store.ErrConflict)
	dupID := tok("aaaaaaaaaa", "bob", store.RoleAdmin, t0)
	wantErr(t, "CreateAdminToken(same id)", s.CreateAdminToken(ctx, dupID, created(dupID, "admin")), store.ErrConflict)
	if diff := cmp.Diff(auditBefore, listAudit(t, s), cmpOpts...); diff != "" {
		t.Errorf("a refused CreateAdminToken wrote audit (-before +after):\n%s", diff)
	}

	got, err := s.GetAdminToken(ctx, ci.ID)
	if err != nil {
		t.Fatalf("GetAdminToken: %v", err)
	}
	if diff := cmp.Diff(ci, got, cmpOpts...); diff != "" {
		t.Errorf("GetAdminToken (-want +got):\n%s", diff)
	}
	_, err = s.GetAdminToken(ctx, "zzzzzzzzzz")
	wantErr(t, "GetAdminToken(unknown)", err, store.ErrNotFound)

	list, err := s.ListAdminTokens(ctx)
	if err != nil {
		t.Fatalf("ListAdminTokens: %v", err)
	}
	if diff := cmp.Diff([]store.AdminToken{ci, alice}, list, cmpOpts...); diff != "" {
		t.Errorf("ListAdminTokens, newest first (-want +got):\n%s", diff)
	}

	// Revoke by name: the token stays, revoked; the name is free again.
	rev := store.AuditEvent{At: t0.Add(time.Minute), Type: store.AuditAdminTokenRevoked, Result: "ok", Actor: "alice"}
	r, err := s.RevokeAdminToken(ctx, "ci", t0.Add(time.Minute).In(berlin), rev)
	if err != nil {
		t.Fatalf("RevokeAdminToken: %v", err)
	}
	ci.RevokedAt = t0.Add(time.Minute)
	if diff := cmp.Diff(ci, r, cmpOpts...); diff != "" {
		t.Errorf("RevokeAdminToken result (-want +got):\n%s", diff)
	}
	if got, _ := s.GetAdminToken(ctx, ci.ID); !got.RevokedAt.Equal(ci.RevokedAt) {
		t.Errorf("GetAdminToken after revoke: RevokedAt = %v", got.RevokedAt)
	}
	_, err = s.RevokeAdminToken(ctx, "ci", t0, rev)
	wantErr(t, "RevokeAdminToken(again)", err, store.ErrNotFound)
	ci2 := tok("eeeeeeeeee", "ci", store.RoleReadOnly, t0.Add(2*time.Minute))
	if err := s.CreateAdminToken(ctx, ci2, created(ci2, "alice")); err != nil {
		t.Errorf("CreateAdminToken(a revoked name again): %v", err)
	}
	revs := auditOf(listAudit(t, s), store.AuditAdminTokenRevoked)
	if len(revs) != 1 || revs[0].TokenID != ci.ID || revs[0].Actor != "alice" {
		t.Errorf("revocation audit = %+v, want one event with the token id and the actor", revs)
	}

	// The operator who revokes an envoy is its audit event's actor.
	e := enroll(t, s, newEnvoy(1, "web1.example.com"))
	if _, err := s.RevokeEnvoys(ctx, []store.Revocation{{UUID: e.UUID, Reason: "stolen", At: t0, Actor: "alice"}}); err != nil {
		t.Fatalf("RevokeEnvoys: %v", err)
	}
	if evs := auditOf(listAudit(t, s), store.AuditEnvoyRevoked); len(evs) != 1 || evs[0].Actor != "alice" {
		t.Errorf("envoy.revoked audit = %+v, want actor alice", evs)
	}
}

func testPolicyRevision(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.LoadPolicyRevision(ctx)
	wantErr(t, "LoadPolicyRevision(empty)", err, store.ErrNotFound)
	r1 := store.PolicyRevision{
		ID:     "0123456789abcdef0123456789abcdef01234567",
		Source: "https://git.example.com/policy.git#main",
		Files: map[string][]byte{
			"policy.cue":         []byte("package policy\n\napproved: [\"*.example.com\"]\n"),
			"sub/dir/revoke.cue": []byte("package policy\n"),
			"binary\x00name.cue": {0, 1, 2, 0xff},
			"cue.mod/module.cue": []byte("module: \"example.com/policy\"\n"),
			"empty.cue":          {},
			"unicode-ü/文件.cue":   []byte("// ü\n"),
		},
		Spec:      []byte(`{"version":1,"approved":[{"v":"*.example.com","p":{"f":"policy.cue","l":3,"c":12}}]}`),
		Signer:    "SHA256:abc",
		AppliedAt: t0.In(berlin),
	}
	if err := s.SavePolicyRevision(ctx, r1); err != nil {
		t.Fatalf("SavePolicyRevision: %v", err)
	}
	got, err := s.LoadPolicyRevision(ctx)
	if err != nil {
		t.Fatalf("LoadPolicyRevision: %v", err)
	}
	r1.AppliedAt = r1.AppliedAt.UTC()
	if diff := cmp.Diff(r1, got, cmpOpts...); diff != "" {
		t.Errorf("LoadPolicyRevision (-want +got):\n%s", diff)
	}
	r2 := store.PolicyRevision{ID: "fedcba", Source: "/srv/policy", Files: map[string][]byte{"a.cue": []byte("package policy\n")}, AppliedAt: t0.Add(time.Hour)}
	if err := s.SavePolicyRevision(ctx, r2); err != nil {
		t.Fatalf("SavePolicyRevision(second): %v", err)
	}
	got, err = s.LoadPolicyRevision(ctx)
	if err != nil {
		t.Fatalf("LoadPolicyRevision: %v", err)
	}
	if diff := cmp.Diff(r2, got, cmpOpts...); diff != "" {
		t.Errorf("LoadPolicyRevision after replace (-want +got):\n%s", diff)
	}
}

func testPolicyRefusals(t *testing.T, s store.Store) {
	ctx := t.Context()
	if got, err := s.ListPolicyRefusals(ctx, "r1"); err != nil || len(got) != 0 {
		t.Fatalf("ListPolicyRefusals(empty) = %v, %v", got, err)
	}
	save := func(r store.PolicyRefusal) {
		t.Helper()
		if err := s.SavePolicyRefusal(ctx, r); err != nil {
			t.Fatalf("SavePolicyRefusal(%s): %v", r.Revision, err)
		}
	}
	a := store.PolicyRefusal{Replica: "r1", Revision: "aaa", Kind: "budget", Limits: "256 MiB, 10s", Errors: `[{"message":"x"}]`, At: t0}
	b := store.PolicyRefusal{Replica: "r1", Revision: "bbb", Kind: "invalid", Errors: `[]`, At: t0.Add(time.Minute).In(berlin)}
	other := store.PolicyRefusal{Replica: "r2", Revision: "aaa", Kind: "verify", Errors: `[]`, At: t0}
	save(a)
	save(b)
	save(other)
	b.At = b.At.UTC()
	got, err := s.ListPolicyRefusals(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.PolicyRefusal{b, a}, got, cmpOpts...); diff != "" {
		t.Errorf("ListPolicyRefusals(r1) newest first (-want +got):\n%s", diff)
	}
	// Saving a revision again replaces what was remembered of it.
	a.Kind, a.At = "invalid", t0.Add(time.Hour)
	save(a)
	got, _ = s.ListPolicyRefusals(ctx, "r1")
	if diff := cmp.Diff([]store.PolicyRefusal{a, b}, got, cmpOpts...); diff != "" {
		t.Errorf("after saving aaa again (-want +got):\n%s", diff)
	}
	// Only the newest are kept.
	for i := range store.MaxPolicyRefusals + 5 {
		save(store.PolicyRefusal{Replica: "r1", Revision: fmt.Sprintf("n%03d", i), Kind: "invalid", Errors: "[]", At: t0.Add(2*time.Hour + time.Duration(i)*time.Second)})
	}
	got, _ = s.ListPolicyRefusals(ctx, "r1")
	if len(got) != store.MaxPolicyRefusals || got[0].Revision != fmt.Sprintf("n%03d", store.MaxPolicyRefusals+4) {
		t.Errorf("after %d more: %d remembered, newest %v", store.MaxPolicyRefusals+5, len(got), got[0].Revision)
	}
	if got, _ := s.ListPolicyRefusals(ctx, "r2"); len(got) != 1 || got[0].Kind != "verify" {
		t.Errorf("ListPolicyRefusals(r2) = %v, want the other replica's own refusal", got)
	}
}

func testPolicyHistory(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.GetPolicyHistory(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetPolicyHistory(unknown) = %v, want ErrNotFound", err)
	}
	a := store.PolicyHistory{ID: "aaa", Name: "main@sha1:aaa", Subject: "add web", Author: "A <a@example.com>", Signer: "SHA256:x",
		Spec: []byte(`{"version":1}`), AppliedAt: t0.In(berlin), Replica: "r1"}
	b := store.PolicyHistory{ID: "bbb", Name: "main@sha1:bbb", Spec: []byte(`{}`), AppliedAt: t0.Add(time.Minute), Replica: "r2"}
	for _, h := range []store.PolicyHistory{a, b} {
		if err := s.SavePolicyHistory(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	a.AppliedAt = a.AppliedAt.UTC()
	got, err := s.ListPolicyHistory(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.PolicyHistory{b, a}, got, cmpOpts...); diff != "" {
		t.Errorf("ListPolicyHistory newest first (-want +got):\n%s", diff)
	}
	if got, err := s.GetPolicyHistory(ctx, "aaa"); err != nil || !cmp.Equal(a, got, cmpOpts...) {
		t.Errorf("GetPolicyHistory(aaa) = %+v, %v", got, err)
	}
	// Applying a revision again moves it to the front.
	a.AppliedAt = t0.Add(time.Hour)
	if err := s.SavePolicyHistory(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ListPolicyHistory(ctx, 1); len(got) != 1 || got[0].ID != "aaa" {
		t.Errorf("ListPolicyHistory(1) after re-applying aaa = %+v", got)
	}
	for i := range store.MaxPolicyHistory + 3 {
		if err := s.SavePolicyHistory(ctx, store.PolicyHistory{ID: fmt.Sprintf("h%03d", i), Spec: []byte("{}"), AppliedAt: t0.Add(2*time.Hour + time.Duration(i)*time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := s.ListPolicyHistory(ctx, 0); len(got) != store.MaxPolicyHistory {
		t.Errorf("%d revisions kept, want %d", len(got), store.MaxPolicyHistory)
	}
}

func testPolicyControl(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.GetPolicyControl(ctx)
	if err != nil || !cmp.Equal(store.PolicyControl{}, got) {
		t.Fatalf("GetPolicyControl(never set) = %+v, %v", got, err)
	}
	c := store.PolicyControl{Suspended: true, SuspendReason: "incident 42", SuspendedBy: "alice", SuspendedAt: t0.In(berlin),
		Pinned: "abc", PinReason: "rollback", PinnedBy: "bob", PinnedAt: t0.Add(time.Minute)}
	if err := s.SetPolicyControl(ctx, c, store.AuditEvent{At: t0, Type: store.AuditPolicySuspended, Result: "ok", Reason: "incident 42"}); err != nil {
		t.Fatal(err)
	}
	c.SuspendedAt = c.SuspendedAt.UTC()
	if got, err := s.GetPolicyControl(ctx); err != nil || !cmp.Equal(c, got, cmpOpts...) {
		t.Errorf("GetPolicyControl = %+v, %v, want %+v", got, err, c)
	}
	if err := s.SetPolicyControl(ctx, store.PolicyControl{}, store.AuditEvent{At: t0.Add(time.Hour), Type: store.AuditPolicyResumed, Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetPolicyControl(ctx); !cmp.Equal(store.PolicyControl{}, got) {
		t.Errorf("after clearing: %+v", got)
	}
	evs, err := s.ListAudit(ctx, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		if strings.HasPrefix(e.Type, "policy.") {
			types = append(types, e.Type)
		}
	}
	if diff := cmp.Diff([]string{store.AuditPolicySuspended, store.AuditPolicyResumed}, types); diff != "" {
		t.Errorf("audit in the same transaction (-want +got):\n%s", diff)
	}
}

func testPrune(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := enroll(t, s, newEnvoy(1, "old.example.com"))       // revoked long ago
	recent := enroll(t, s, newEnvoy(2, "recent.example.com")) // revoked recently
	active := enroll(t, s, newEnvoy(3, "active.example.com")) // never revoked
	if _, err := s.RevokeEnvoys(ctx, []store.Revocation{{UUID: old.UUID, Reason: "x", At: t0.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeEnvoys(ctx, []store.Revocation{{UUID: recent.UUID, Reason: "x", At: t0.Add(72 * time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, store.AuditEvent{At: t0.Add(71 * time.Hour), Type: store.AuditPolicyApplied}, store.AuditEvent{At: t0.Add(73 * time.Hour), Type: store.AuditPolicyApplied}); err != nil {
		t.Fatal(err)
	}
	// Nonces expire by the store's clock (the real one here). Two envoys:
	// SeenNonce itself deletes the expired nonces of its envoy.
	for _, nc := range []struct {
		envoy string
		nonce string
		exp   time.Time
	}{{uuidN(7), "expired", time.Now().Add(-time.Hour)}, {uuidN(8), "valid", time.Now().Add(time.Hour)}} {
		if _, err := s.SeenNonce(ctx, nc.envoy, []byte(nc.nonce), nc.exp); err != nil {
			t.Fatal(err)
		}
	}
	// Audit now: 3 registrations at ~t0, 1 revocation at t0+1h, one at
	// t0+72h, and the two above. Cut at t0+48h.
	n, err := s.Prune(ctx, t0.Add(48*time.Hour))
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if want := int64(4 + 1 + 1); n != want {
		t.Errorf("Prune = %d rows, want %d (4 audit events, 1 envoy, 1 nonce)", n, want)
	}
	if seen, err := s.SeenNonce(ctx, uuidN(8), []byte("valid"), time.Now().Add(time.Hour)); err != nil || !seen {
		t.Errorf("SeenNonce(valid nonce after Prune) = %v, %v; want true (still remembered)", seen, err)
	}
	_, err = s.GetEnvoy(ctx, old.UUID)
	wantErr(t, "GetEnvoy(pruned)", err, store.ErrNotFound)
	for _, u := range []string{recent.UUID, active.UUID} {
		getEnvoy(t, s, u)
	}
	if evs := listAudit(t, s); len(evs) != 3 {
		t.Errorf("audit events left = %d, want 3", len(evs))
	}
	n, err = s.Prune(ctx, t0.Add(48*time.Hour))
	if err != nil || n != 0 {
		t.Errorf("Prune(again) = %d, %v; want 0, nil", n, err)
	}
}

func testSeenNonce(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Expiry is judged against the store's clock (the real one here), so
	// the times are far from now in either direction.
	future := time.Now().Add(time.Hour)
	past := time.Now().Add(-time.Hour)
	steps := []struct {
		name  string
		envoy string
		nonce []byte
		exp   time.Time
		want  bool
	}{
		{"first use", uuidN(1), []byte("n1"), future, false},
		{"replay", uuidN(1), []byte("n1"), future, true},
		{"same nonce other envoy", uuidN(2), []byte("n1"), future, false},
		{"other nonce", uuidN(1), []byte("n2"), future, false},
		{"binary nonce", uuidN(1), []byte{0, 0xff, 0}, future, false},
		{"binary replay", uuidN(1), []byte{0, 0xff, 0}, future, true},
		{"already expired", uuidN(3), []byte("old"), past, false},
		{"expired entry is forgotten", uuidN(3), []byte("old"), future, false},
		{"then remembered", uuidN(3), []byte("old"), future, true},
	}
	for _, st := range steps {
		seen, err := s.SeenNonce(ctx, st.envoy, st.nonce, st.exp)
		if err != nil {
			t.Fatalf("%s: SeenNonce: %v", st.name, err)
		}
		if seen != st.want {
			t.Errorf("%s: SeenNonce = %v, want %v", st.name, seen, st.want)
		}
	}
}

func testSeenNonceConcurrent(t *testing.T, s store.Store) {
	const n = 30
	exp := time.Now().Add(time.Hour)
	fresh := make([]bool, n)
	errs := race(n, func(i int) error {
		seen, err := s.SeenNonce(context.Background(), uuidN(1), []byte("same"), exp)
		fresh[i] = !seen
		return err
	})
	count := 0
	for i, err := range errs {
		if err != nil {
			t.Errorf("SeenNonce %d: %v", i, err)
		} else if fresh[i] {
			count++
		}
	}
	if count != 1 {
		t.Errorf("%d calls saw the nonce as new, want exactly 1", count)
	}
}
