package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlcore"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlq"
	"github.com/vigo-enroll/vigo/server/store/storetest"
)

func openAt(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openTemp(t testing.TB) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "vigo.db"))
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := Open(t.Context(), filepath.Join(t.TempDir(), "vigo.db"), Options{Now: now})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testEnvoy(i int) store.Envoy {
	return store.Envoy{
		UUID:      fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
		Hostname:  fmt.Sprintf("host%d.example.com", i),
		PublicKey: []byte("0123456789abcdef0123456789abcdef"),
		CreatedAt: t0,
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub dir", "vigo?.db") // characters that need escaping in a DSN
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	e := testEnvoy(1)
	if _, err := s.Enroll(t.Context(), store.EnrollParams{Envoy: e, Now: t0, Audit: store.AuditEvent{At: t0, Type: store.AuditRegistration}}); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	rev := store.PolicyRevision{ID: "abc", Files: map[string][]byte{"a.cue": []byte("package policy\n")}, AppliedAt: t0}
	if err := s.SavePolicyRevision(t.Context(), rev); err != nil {
		t.Fatalf("SavePolicyRevision: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := openAt(t, path)
	got, err := s2.GetEnvoy(t.Context(), e.UUID)
	if err != nil {
		t.Fatalf("GetEnvoy after reopen: %v", err)
	}
	e.Status = store.StatusActive
	if diff := cmp.Diff(e, got); diff != "" {
		t.Errorf("envoy after reopen (-want +got):\n%s", diff)
	}
	gotRev, err := s2.LoadPolicyRevision(t.Context())
	if err != nil {
		t.Fatalf("LoadPolicyRevision after reopen: %v", err)
	}
	if diff := cmp.Diff(rev, gotRev); diff != "" {
		t.Errorf("revision after reopen (-want +got):\n%s", diff)
	}
	evs, err := s2.ListAudit(t.Context(), time.Time{}, 0)
	if err != nil || len(evs) != 1 {
		t.Errorf("ListAudit after reopen = %d events, %v; want 1", len(evs), err)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigo.db")
	for i := range 3 {
		s, err := Open(t.Context(), path, Options{})
		if err != nil {
			t.Fatalf("Open #%d: %v", i, err)
		}
		v, err := s.SchemaVersion(t.Context())
		if err != nil {
			t.Fatalf("SchemaVersion: %v", err)
		}
		if v != len(migrations) {
			t.Errorf("Open #%d: schema version %d, want %d", i, v, len(migrations))
		}
		var n int
		if err := s.rdb.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != len(migrations) {
			t.Errorf("Open #%d: %d rows in schema_migrations, want %d", i, n, len(migrations))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMigrationChangedAt upgrades a version-1 database with envoys: each
// gets changed_at from its last change known then (revocation or
// enrollment).
func TestMigrationChangedAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigo.db")
	all := migrations
	migrations = all[:1]
	s, err := Open(t.Context(), path, Options{})
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO envoys (uuid, hostname, public_key, created_at, status) VALUES ('a', 'a.example.com', x'00', 1000, 'active')`,
		`INSERT INTO envoys (uuid, hostname, public_key, created_at, status, revoked_at) VALUES ('b', 'b.example.com', x'00', 1000, 'revoked', 5000)`,
	} {
		if _, err := s.wdb.ExecContext(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openAt(t, path)
	for uuid, want := range map[string]int64{"a": 1000, "b": 5000} {
		var got int64
		if err := s.rdb.QueryRowContext(t.Context(), `SELECT changed_at FROM envoys WHERE uuid = ?`, uuid).Scan(&got); err != nil || got != want {
			t.Errorf("changed_at of %s = %d (%v), want %d", uuid, got, err, want)
		}
	}
	es, err := s.ListEnvoys(t.Context(), store.EnvoyFilter{ChangedSince: time.UnixMilli(2000)})
	if err != nil || len(es) != 1 || es[0].UUID != "b" {
		t.Errorf("changed since 2000 ms = %v (%v), want only b", es, err)
	}
}

// TestConcurrentOpen opens the same new file from several goroutines at
// once, as two processes starting together would: each migration is
// applied once and no Open fails.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigo.db")
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			s, err := Open(t.Context(), path, Options{})
			if err == nil {
				err = s.Close()
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Open: %v", err)
		}
	}
	s := openAt(t, path)
	if v, err := s.SchemaVersion(t.Context()); err != nil || v != len(migrations) {
		t.Errorf("SchemaVersion = %d, %v; want %d", v, err, len(migrations))
	}
}

func TestPragmas(t *testing.T) {
	s := openTemp(t)
	for _, tc := range []struct {
		name   string
		db     *sql.DB
		pragma string
		want   string
	}{
		{"journal_mode", s.wdb, "journal_mode", "wal"},
		{"synchronous", s.wdb, "synchronous", "1"}, // NORMAL: the syncer fsyncs the WAL
		{"foreign_keys", s.wdb, "foreign_keys", "1"},
		{"busy_timeout", s.wdb, "busy_timeout", "10000"},
		{"reader query_only", s.rdb, "query_only", "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			if err := tc.db.QueryRowContext(t.Context(), "PRAGMA "+tc.pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("PRAGMA %s = %q, want %q", tc.pragma, got, tc.want)
			}
		})
	}
}

// TestWriteAnsweredAfterWALSync checks the durability order: a write is
// committed, then the WAL is synced, then the writer is answered.
func TestWriteAnsweredAfterWALSync(t *testing.T) {
	s := openTemp(t)
	var returned atomic.Bool
	syncs := 0
	s.syncWAL = func() error {
		syncs++
		if returned.Load() {
			t.Error("Enroll returned before the WAL sync")
		}
		var n int
		if err := s.rdb.QueryRow(`SELECT COUNT(*) FROM envoys`).Scan(&n); err != nil || n != 1 {
			t.Errorf("at the sync, envoys = %d (%v), want the committed one", n, err)
		}
		return syncFile(s.walPath())
	}
	_, err := s.Enroll(t.Context(), store.EnrollParams{Envoy: testEnvoy(1), Now: t0, Audit: store.AuditEvent{At: t0, Type: store.AuditRegistration}})
	returned.Store(true)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if syncs == 0 {
		t.Error("Enroll returned without a WAL sync")
	}
}

// TestWALSyncFailureRefusesWrites: after a failed fsync nothing more is
// acknowledged, and the error says what happened and what to do.
func TestWALSyncFailureRefusesWrites(t *testing.T) {
	s := openTemp(t)
	syncs := 0
	s.syncWAL = func() error { syncs++; return errors.New("input/output error") }
	_, err := s.Enroll(t.Context(), store.EnrollParams{Envoy: testEnvoy(1), Now: t0, Audit: store.AuditEvent{At: t0, Type: store.AuditRegistration}})
	if err == nil || !strings.Contains(err.Error(), "could not be synced") || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("Enroll with a failing sync: %v, want the sync error", err)
	}
	_, err = s.Enroll(t.Context(), store.EnrollParams{Envoy: testEnvoy(2), Now: t0, Audit: store.AuditEvent{At: t0, Type: store.AuditRegistration}})
	if err == nil || !strings.Contains(err.Error(), "restarted") {
		t.Fatalf("Enroll after a failed sync: %v, want writes refused", err)
	}
	if syncs != 1 {
		t.Errorf("syncs = %d, want 1 (writes refused without trying again)", syncs)
	}
}

// TestSyncFileReachesTheWAL: the file the syncer fsyncs is SQLite's WAL,
// and it holds the commit.
func TestSyncFileReachesTheWAL(t *testing.T) {
	s := openTemp(t)
	before, err := os.Stat(s.walPath())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(t.Context(), store.EnrollParams{Envoy: testEnvoy(1), Now: t0, Audit: store.AuditEvent{At: t0, Type: store.AuditRegistration}}); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(s.walPath())
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() <= before.Size() && after.ModTime().Equal(before.ModTime()) {
		t.Errorf("the WAL %s did not change with a commit (size %d -> %d)", s.walPath(), before.Size(), after.Size())
	}
	if err := syncFile(filepath.Join(t.TempDir(), "missing-wal")); err == nil {
		t.Error("syncFile of a missing file succeeded")
	}
}

// TestRevokedIsTerminalInSQL checks that the database itself, not only
// the Go code, refuses to bring a revoked envoy back.
func TestRevokedIsTerminalInSQL(t *testing.T) {
	s := openTemp(t)
	e := testEnvoy(1)
	if _, err := s.Enroll(t.Context(), store.EnrollParams{Envoy: e, Now: t0, Audit: store.AuditEvent{At: t0, Type: store.AuditRegistration}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeEnvoys(t.Context(), []store.Revocation{{UUID: e.UUID, Reason: "x", At: t0}}); err != nil {
		t.Fatal(err)
	}
	_, err := s.wdb.ExecContext(t.Context(), `UPDATE envoys SET status = 'active' WHERE uuid = ?`, e.UUID)
	if err == nil || !strings.Contains(err.Error(), "revoked envoy cannot become active") {
		t.Errorf("UPDATE revoked -> active: err = %v, want the trigger's refusal", err)
	}
	// A second active envoy with one hostname is refused by the index.
	_, err = s.wdb.ExecContext(t.Context(), `INSERT INTO envoys (uuid, hostname, public_key, created_at, status) VALUES ('u1', 'h', x'', 0, 'active'), ('u2', 'h', x'', 0, 'active')`)
	if !isConflict(err) {
		t.Errorf("two active envoys with one hostname: err = %v, want a constraint violation", err)
	}
}

// TestReadOnlyPool checks that the read pool cannot write.
func TestReadOnlyPool(t *testing.T) {
	s := openTemp(t)
	_, err := s.rdb.ExecContext(t.Context(), `DELETE FROM audit`)
	if err == nil {
		t.Error("write through the read pool succeeded, want it refused")
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(t.Context(), "", Options{}); err == nil {
		t.Error("Open(\"\") succeeded")
	}
	dir := t.TempDir()
	if _, err := Open(t.Context(), filepath.Join(dir, "missing", "deeper", "vigo.db"), Options{}); err == nil {
		t.Error("Open in a missing folder succeeded")
	}
}

// TestTwoStoresOneFile is two processes (a server and vigocli) on one
// file: writes from both interleave without "database is locked".
func TestTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigo.db")
	a, b := openAt(t, path), openAt(t, path)
	const n = 40
	errs := make(chan error, n)
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		go func() {
			e := testEnvoy(i)
			_, err := s.Enroll(t.Context(), store.EnrollParams{Envoy: e, Now: t0, Audit: store.AuditEvent{At: t0, Type: store.AuditRegistration}})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Enroll: %v", err)
		}
	}
	es, err := b.ListEnvoys(t.Context(), store.EnvoyFilter{})
	if err != nil || len(es) != n {
		t.Errorf("ListEnvoys = %d, %v; want %d", len(es), err, n)
	}
}

func BenchmarkEnroll(b *testing.B) {
	storetest.BenchmarkEnroll(b, openTemp(b))
}

func BenchmarkRecordCheckins(b *testing.B) {
	storetest.BenchmarkRecordCheckins(b, openTemp(b), 1000)
}

func BenchmarkSeenNonce(b *testing.B) {
	storetest.BenchmarkSeenNonce(b, openTemp(b))
}

// fill inserts n active envoys in one transaction, bypassing Enroll (one
// fsync per enrollment would make 100,000 of them slow to set up).
func fill(tb testing.TB, s *Store, n int) {
	tb.Helper()
	tx, err := s.wdb.BeginTx(tb.Context(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(tb.Context(), `INSERT INTO envoys (uuid, hostname, public_key, created_at, status, last_seen) VALUES (?, ?, x'00', ?, ?, ?)`)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		status := store.StatusActive
		if i%10 == 0 {
			status = store.StatusRevoked
		}
		if _, err := stmt.ExecContext(tb.Context(), fmt.Sprintf("00000000-0000-4000-8000-%012d", i), fmt.Sprintf("host%d.example.com", i), t0.UnixMilli()+int64(i), status, t0.UnixMilli()); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkListEnvoys100k lists envoys out of 100,000.
func BenchmarkListEnvoys100k(b *testing.B) {
	s := openTemp(b)
	fill(b, s, 100_000)
	for _, bc := range []struct {
		name string
		f    store.EnvoyFilter
		want int
	}{
		{"hostname", store.EnvoyFilter{Hostname: "host54321.example.com"}, 1},
		{"active first 100", store.EnvoyFilter{Status: store.StatusActive, Limit: 100}, 100},
		{"all", store.EnvoyFilter{}, 100_000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				es, err := s.ListEnvoys(b.Context(), bc.f)
				if err != nil || len(es) != bc.want {
					b.Fatalf("ListEnvoys = %d, %v; want %d", len(es), err, bc.want)
				}
			}
		})
	}
}

// TestListEnvoysUsesIndexes checks the query plans of the lookups that
// must stay fast with 100,000 envoys: none scans the whole table.
func TestListEnvoysUsesIndexes(t *testing.T) {
	s := openTemp(t)
	fill(t, s, 1000)
	if _, err := s.wdb.ExecContext(t.Context(), `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, query string
		args        []any
	}{
		{"by hostname", `SELECT ` + sqlcore.EnvoyCols + ` FROM envoys WHERE 1 = 1 AND hostname = ? ORDER BY created_at, uuid`, []any{"host1.example.com"}},
		{"active by hostname", `SELECT ` + sqlcore.EnvoyCols + ` FROM envoys WHERE hostname = ? AND status = 'active'`, []any{"host1.example.com"}},
		{"by status", `SELECT ` + sqlcore.EnvoyCols + ` FROM envoys WHERE 1 = 1 AND status = ? ORDER BY created_at, uuid LIMIT ?`, []any{"active", 100}},
		{"all ordered", `SELECT ` + sqlcore.EnvoyCols + ` FROM envoys WHERE 1 = 1 ORDER BY created_at, uuid`, nil},
		{"changed since", `SELECT ` + sqlcore.EnvoyCols + ` FROM envoys WHERE 1 = 1 AND changed_at >= ? ORDER BY changed_at, uuid`, []any{0}},
		{"audit since", `SELECT id FROM audit WHERE at >= ? ORDER BY at, id LIMIT ?`, []any{0, -1}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkPlan(t, s, tc.query, tc.args, "") })
	}
}

// TestSnapshotWhileWriting: Snapshot copies a database that another
// connection keeps writing (a running server) into a consistent,
// openable file with everything committed before it began, mode 0600.
func TestSnapshotWhileWriting(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "vigo.db")
	s := openAt(t, src)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	if err := s.CreateToken(ctx, store.Token{ID: "before0001", SecretHash: []byte("h"), Pattern: "a.example.com", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}, store.AuditEvent{Type: store.AuditTokenCreated, At: now}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.AppendAudit(ctx, store.AuditEvent{Type: store.AuditTokenCreated, At: now, Reason: fmt.Sprint(i)}); err != nil {
				done <- err
				return
			}
		}
	}()
	dst := filepath.Join(dir, "copy.db")
	v, err := Snapshot(ctx, src, dst)
	close(stop)
	if werr := <-done; werr != nil {
		t.Fatalf("concurrent write: %v", werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if v != len(migrations) {
		t.Errorf("schema version %d, want %d", v, len(migrations))
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot file: %v %v, want mode 0600", fi, err)
	}
	cp := openAt(t, dst)
	if _, err := cp.GetToken(ctx, "before0001"); err != nil {
		t.Errorf("token committed before the snapshot: %v", err)
	}
	if _, err := Snapshot(ctx, src, dst); err == nil {
		t.Error("snapshot over an existing file: no error")
	}
	if _, err := Snapshot(ctx, filepath.Join(dir, "missing.db"), filepath.Join(dir, "x.db")); err == nil {
		t.Error("snapshot of a missing database: no error")
	}
}

// TestIssue12Item6FilesPrivate: the database and its -wal and -shm files
// are 0600 whatever the folder and the umask, also when an older version
// left them 0644 (security review L5: token hashes, envoy keys and the
// audit trail were readable by every local user).
func TestIssue12Item6FilesPrivate(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix permission bits")
	}
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "vigo.db")
	files := []string{path, path + "-wal", path + "-shm"}
	check := func(when string) {
		t.Helper()
		for _, f := range files {
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s mode %v, want 0600", when, filepath.Base(f), fi.Mode().Perm())
			}
		}
	}
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := testEnvoy(1)
	if _, err := s.Enroll(t.Context(), store.EnrollParams{Envoy: e, Now: t0, Audit: store.AuditEvent{At: t0, Type: store.AuditRegistration}}); err != nil {
		t.Fatal(err)
	}
	check("new database")
	for _, f := range files {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	for _, f := range files {
		if err := os.Chmod(f, 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	s = openAt(t, path)
	if _, err := s.GetEnvoy(t.Context(), e.UUID); err != nil {
		t.Fatal(err)
	}
	check("reopened 0644 database")
}

// TestBrowsingUsesIndexes checks the query plans of QueryEnvoys,
// CountEnvoys and QueryAudit that must stay fast with 100,000 envoys (the
// console's pages): each reads an index in its order, with no temporary
// sort; the filters that no index serves are checked against rows found
// in index order.
func TestBrowsingUsesIndexes(t *testing.T) {
	s := openTemp(t)
	fill(t, s, 1000)
	at := time.UnixMilli(t0.UnixMilli() + 500)
	cur := &store.EnvoyCursor{Hostname: "host500.example.com", Time: at, UUID: "00000000-0000-4000-8000-000000000500"}
	type plan struct {
		name  string
		query string
		args  []any
		index string // the index the plan must use
	}
	var plans []plan
	for _, tc := range []struct {
		name  string
		q     store.EnvoyQuery
		index string
	}{
		{"first page", store.EnvoyQuery{Limit: 51}, "envoys_hostname_uuid"},
		{"active by hostname", store.EnvoyQuery{Status: store.StatusActive, Limit: 51}, "envoys_status_hostname"},
		{"deep page", store.EnvoyQuery{After: cur, Limit: 51}, "envoys_hostname_uuid"},
		{"page before", store.EnvoyQuery{Before: cur, Desc: true, Limit: 51}, "envoys_hostname_uuid"},
		{"filtered by method", store.EnvoyQuery{Method: "token", Rule: "r", Limit: 51}, "envoys_hostname_uuid"},
		{"by enrollment, newest first", store.EnvoyQuery{Sort: store.SortCreated, Desc: true, After: cur, Limit: 51}, "envoys_created"},
		{"by last seen", store.EnvoyQuery{Sort: store.SortSeen, After: cur, Limit: 51}, "envoys_seen"},
	} {
		clauses, args, _ := sqlq.Envoys(tc.q, dialect)
		plans = append(plans, plan{tc.name, `SELECT ` + sqlcore.EnvoyCols + ` FROM envoys` + clauses, args, tc.index})
	}
	query, args := sqlq.CountEnvoys(store.EnvoyQuery{Status: store.StatusActive, SeenBefore: at}, dialect)
	plans = append(plans, plan{"stale count", query, args, "envoys_seen"})
	for _, tc := range []struct {
		name  string
		q     store.AuditQuery
		index string
	}{
		{"audit newest first", store.AuditQuery{Limit: 101}, "audit_at"},
		{"audit by type", store.AuditQuery{Types: []string{store.AuditRegistration}, Limit: 101}, "audit_type_at"},
		{"audit by hostname", store.AuditQuery{Hostname: "host1.example.com", Limit: 101}, "audit_hostname_at"},
		{"audit of an envoy", store.AuditQuery{EnvoyUUID: "u", Limit: 51}, "audit_envoy_at"},
		{"audit older page", store.AuditQuery{Before: &store.AuditCursor{At: at, ID: 5}, Limit: 101}, "audit_at"},
	} {
		clauses, args := sqlq.Audit(tc.q, dialect)
		plans = append(plans, plan{tc.name, `SELECT ` + sqlcore.AuditCols + ` FROM audit` + clauses, args, tc.index})
	}
	// The store runs no ANALYZE; the plans hold with statistics too.
	for _, stats := range []bool{false, true} {
		if stats {
			if _, err := s.wdb.ExecContext(t.Context(), `ANALYZE`); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range plans {
			t.Run(fmt.Sprintf("%s stats=%v", tc.name, stats), func(t *testing.T) {
				checkPlan(t, s, tc.query, tc.args, tc.index)
			})
		}
	}
}

// checkPlan fails t unless the plan of query reads the index (any index
// when it is "") and sorts in no temporary b-tree.
func checkPlan(t *testing.T, s *Store, query string, args []any, index string) {
	t.Helper()
	rows, err := s.rdb.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	joined := strings.Join(plan, "; ")
	if !strings.Contains(joined, "INDEX "+index) {
		t.Errorf("plan %q does not use index %s", joined, index)
	}
	if strings.Contains(joined, "TEMP B-TREE") {
		t.Errorf("plan %q sorts in a temporary b-tree", joined)
	}
}
