package pgstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/storetest"
)

// testDSN returns the DSN of the test server, or skips the test.
func testDSN(t testing.TB) string { return storetest.PostgresDSN(t) }

// freshSchema returns a DSN selecting a new schema, dropped after the test.
func freshSchema(t testing.TB) string { return storetest.PostgresSchema(t) }

func openFresh(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.Context(), freshSchema(t), Options{MaxConns: 8})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	testDSN(t)
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := Open(t.Context(), freshSchema(t), Options{MaxConns: 8, Now: now})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestMigrationsIdempotent(t *testing.T) {
	dsn := freshSchema(t)
	// Replicas starting together.
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			s, err := Open(t.Context(), dsn, Options{})
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("Open: %v", err)
		}
	}
	s, err := Open(t.Context(), dsn, Options{})
	if err != nil {
		t.Fatalf("Open again: %v", err)
	}
	defer s.Close()
	v, err := s.SchemaVersion(t.Context())
	if err != nil || v != len(migrations) {
		t.Errorf("SchemaVersion = %d, %v; want %d", v, err, len(migrations))
	}
	var n int
	if err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(migrations) {
		t.Errorf("schema_migrations rows = %d, %v; want %d", n, err, len(migrations))
	}
}

// TestRevokedIsTerminalInSQL checks that the database itself refuses to
// bring a revoked envoy back.
func TestRevokedIsTerminalInSQL(t *testing.T) {
	s := openFresh(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e := store.Envoy{UUID: "u1", Hostname: "h.example.com", PublicKey: []byte("k"), CreatedAt: t0}
	if _, err := s.Enroll(t.Context(), store.EnrollParams{Envoy: e, Now: t0, Audit: store.AuditEvent{At: t0, Type: store.AuditRegistration}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeEnvoys(t.Context(), []store.Revocation{{UUID: "u1", Reason: "x", At: t0}}); err != nil {
		t.Fatal(err)
	}
	_, err := s.pool.Exec(t.Context(), `UPDATE envoys SET status = 'active' WHERE uuid = 'u1'`)
	if err == nil || !strings.Contains(err.Error(), "revoked envoy cannot become active") {
		t.Errorf("UPDATE revoked -> active: err = %v, want the trigger's refusal", err)
	}
}

func TestOpenErrorHasNoPassword(t *testing.T) {
	// Nothing listens on port 1 of loopback: the connection fails fast.
	_, err := Open(t.Context(), "postgres://vigo:s3cr3t-pw@127.0.0.1:1/vigo?sslmode=disable&connect_timeout=5", Options{})
	if err == nil {
		t.Fatal("Open succeeded against a closed port")
	}
	if strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Errorf("error reveals the password: %v", err)
	}
	_, err = Open(t.Context(), "postgres://vigo:s3cr3t-pw@127.0.0.1:bad/vigo", Options{})
	if err == nil || strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Errorf("Open(bad DSN) = %v; want an error without the password", err)
	}
}

// TestTwoReplicas races two stores (two pools, as two server replicas
// would have) on one database: one token, one hostname.
func TestTwoReplicas(t *testing.T) {
	dsn := freshSchema(t)
	var replicas [2]*Store
	for i := range replicas {
		s, err := Open(t.Context(), dsn, Options{MaxConns: 4})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		replicas[i] = s
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tok := store.Token{ID: "tok", SecretHash: []byte("h"), Pattern: "*", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if err := replicas[0].CreateToken(t.Context(), tok, store.AuditEvent{At: t0, Type: store.AuditTokenCreated}); err != nil {
		t.Fatal(err)
	}
	const n = 40
	errs := make(chan error, n)
	for i := range n {
		go func() {
			e := store.Envoy{UUID: "u" + strconv.Itoa(i), Hostname: "same.example.com", PublicKey: []byte("k"), CreatedAt: t0}
			p := store.EnrollParams{Envoy: e, Now: t0, Audit: store.AuditEvent{At: t0, Type: store.AuditRegistration}}
			if i%4 == 0 {
				p.TokenID = "tok"
			} else {
				p.Force = true
			}
			_, err := replicas[i%2].Enroll(context.Background(), p)
			errs <- err
		}()
	}
	tokenWins := 0
	for i := range n {
		err := <-errs
		switch {
		case err == nil:
		case errors.Is(err, store.ErrTokenUnavailable), errors.Is(err, store.ErrHostnameTaken):
		default:
			t.Errorf("Enroll %d: unexpected error %v", i, err)
		}
	}
	es, err := replicas[1].ListEnvoys(t.Context(), store.EnvoyFilter{Hostname: "same.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := replicas[0].GetToken(t.Context(), "tok")
	if err != nil {
		t.Fatal(err)
	}
	active := 0
	for _, e := range es {
		if e.Status == store.StatusActive {
			active++
		}
		if e.UUID == got.UsedBy {
			tokenWins++
		}
	}
	if active != 1 {
		t.Errorf("active envoys = %d, want 1", active)
	}
	// A used token names an envoy that exists: a failed enrollment left
	// no trace.
	if got.UsedBy != "" && tokenWins != 1 {
		t.Errorf("token used by %q, which is not an enrolled envoy", got.UsedBy)
	}
}

func BenchmarkEnroll(b *testing.B) {
	storetest.BenchmarkEnroll(b, openFresh(b))
}

func BenchmarkRecordCheckins(b *testing.B) {
	storetest.BenchmarkRecordCheckins(b, openFresh(b), 1000)
}

func BenchmarkSeenNonce(b *testing.B) {
	storetest.BenchmarkSeenNonce(b, openFresh(b))
}
