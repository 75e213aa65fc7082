// Package sqlitestore implements store.Store on SQLite through the pure-Go
// driver modernc.org/sqlite (no cgo). It is the embedded default: one file in
// the server's data folder, in WAL mode.
//
// SQLite allows one writer at a time. The store therefore keeps two pools on
// the same file: a pool of read-only connections for queries, and a pool of
// exactly one connection for writes, whose transactions start with
// BEGIN IMMEDIATE. Writers of this process queue on that one connection
// instead of failing with "database is locked"; writers of another process
// (vigocli on the same file, say) take the write lock at BEGIN and wait for
// it up to the busy timeout, so a transaction never fails half-way when it
// upgrades from reading to writing.
//
// Durability: a write is acknowledged only once the write-ahead log that
// holds its commit has been synced to disk (see syncer), so an
// acknowledged enrollment survives a power loss, as with
// synchronous=FULL, while the next group of writes runs during the sync.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlcore"
)

// Options configures a Store. The zero value is usable.
type Options struct {
	// Logger receives migration messages. Nil discards logs.
	Logger *slog.Logger
	// BusyTimeout is how long a write waits for the lock held by another
	// process before failing. Zero means 10 seconds.
	BusyTimeout time.Duration
	// MaxReadConns bounds the read pool. Zero means 4.
	MaxReadConns int
	// Now returns the current time, used when a record's time is zero and
	// to expire nonces. Nil means time.Now.
	Now func() time.Time
}

// Store is a store.Store on one SQLite file. Its operations are
// sqlcore's, run on the read pool and through the writer.
type Store struct {
	sqlcore.Core
	path string
	rdb  *sql.DB // read-only connections
	wdb  *sql.DB // the single write connection
	log  *slog.Logger

	writes     chan *writeOp        // to the writer goroutine (group commit)
	committed  chan committedGroup  // from the writer to the syncer
	stmts      map[string]*sql.Stmt // prepared on wdb; used by the writer goroutine only
	toPrepare  map[string]bool      // seen in a transaction, prepared after it
	closing    chan struct{}
	writerDone chan struct{}
	syncerDone chan struct{}
	closeOnce  sync.Once

	// syncWAL makes every commit so far durable: it fsyncs the
	// write-ahead log. Replaced in tests.
	syncWAL func() error
	// syncErr is set when a sync failed; every later write is refused.
	syncErr atomic.Pointer[error]
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the SQLite database at path, configures
// it and applies pending migrations.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("open sqlite store: empty path")
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 10 * time.Second
	}
	maxRead := opts.MaxReadConns
	if maxRead <= 0 {
		maxRead = 4
	}
	s := &Store{log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "sqlitestore")

	// Durability: in WAL mode synchronous=NORMAL survives a crash of the
	// process (the WAL is in the OS page cache), but a power loss or OS
	// crash can roll back the last transactions, because SQLite then syncs
	// the WAL only at checkpoints. An acknowledged enrollment must never be
	// lost (the envoy holds a certificate the server would no longer know,
	// and its token would be usable again). synchronous=FULL would sync the
	// WAL inside every commit, while the write connection, and so every
	// other write, waits. Instead the write connection uses NORMAL and the
	// syncer goroutine fsyncs the WAL after each commit, before anyone is
	// answered: the same guarantee as FULL (an fsync of the file after the
	// commit's frames were written), but the next group of writes runs
	// during the fsync, and one fsync can cover several commits. Other
	// connections may read a commit a fraction of a millisecond before it
	// is durable; nobody is told it succeeded before it is.
	if err := makePrivate(path); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}

	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(ON)")
	base := "file:" + (&url.URL{Path: path}).EscapedPath()

	wq := cloneValues(q)
	wq.Add("_pragma", "synchronous(NORMAL)")
	// BEGIN IMMEDIATE: take the write lock when the transaction starts, so
	// that it waits (busy_timeout) rather than failing with SQLITE_BUSY when
	// a read turns into a write.
	wq.Set("_txlock", "immediate")
	wdb, err := sql.Open("sqlite", base+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	s.wdb = wdb
	s.writes, s.closing, s.writerDone = make(chan *writeOp), make(chan struct{}), make(chan struct{})
	s.committed, s.syncerDone = make(chan committedGroup, 256), make(chan struct{})
	s.stmts, s.toPrepare = map[string]*sql.Stmt{}, map[string]bool{}
	s.path = path
	s.syncWAL = func() error { return syncFile(s.walPath()) }
	go s.writer()
	go s.syncer()
	// Create the file and switch it to WAL before readers connect.
	if err := connect(ctx, wdb, busy); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open sqlite store %s: connect writer: %w", path, err)
	}

	rq := cloneValues(q)
	rq.Del("_pragma")
	// journal_mode is persistent in the file (the writer set it); readers
	// must not try to change it. query_only makes a write through the read
	// pool an error.
	rq.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	rq.Add("_pragma", "foreign_keys(ON)")
	rq.Add("_pragma", "query_only(ON)")
	rdb, err := sql.Open("sqlite", base+"?"+rq.Encode())
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(maxRead)
	rdb.SetMaxIdleConns(maxRead)
	s.rdb = rdb
	s.Core = sqlcore.New(sqlcore.Config{Dialect: coreDialect, Read: sqlcore.SQL(rdb), Tx: s.tx, Now: opts.Now})
	if err := connect(ctx, rdb, busy); err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite store %s: connect reader: %w", path, err)
	}

	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	// Writes are acknowledged after an fsync of the WAL file: make sure it
	// is where the syncer looks (a store whose file system refused WAL
	// mode would otherwise sync nothing).
	var mode string
	if err := s.wdb.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		s.Close()
		return nil, fmt.Errorf("open sqlite store %s: journal mode is %q (%v), not wal: the database must be on a local file system", path, mode, err)
	}
	if _, err := os.Stat(s.walPath()); err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite store %s: write-ahead log: %w", path, err)
	}
	return s, nil
}

// makePrivate creates the database file 0600 when it does not exist and
// makes it, its -wal and its -shm 0600 when they do. The store holds
// token hashes, envoy keys and the audit trail, so it must not depend on
// the folder being private (a data folder made by a package or by
// mkdir -p is usually 0755). SQLite creates the -wal and -shm files with
// the database file's mode, so they follow once it is 0600; an older
// version left all three 0644.
func makePrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return err
		case fi.Mode().Perm()&0o077 == 0:
			continue
		}
		if err := os.Chmod(p, 0o600); err != nil {
			return fmt.Errorf("make %s private: %w", p, err)
		}
	}
	return nil
}

// walPath is where SQLite keeps the write-ahead log of the database.
func (s *Store) walPath() string { return s.path + "-wal" }

// syncFile flushes the file at path to disk: its data, and the metadata
// needed to read it back, as SQLite's own syncs do. The file is opened each
// time, so that the sync always reaches the file SQLite writes.
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = datasync(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// connect opens a first connection of db. Switching a new file to WAL
// takes an exclusive lock for which SQLite does not always call the busy
// handler (two processes creating the database at once), so a busy error
// is retried here, up to the busy timeout.
func connect(ctx context.Context, db *sql.DB, busy time.Duration) error {
	deadline := time.Now().Add(busy)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		err := db.PingContext(ctx)
		if err == nil || sqliteCode(err)&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// Close releases both pools.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.closing != nil {
			close(s.closing)
			<-s.writerDone
			<-s.syncerDone
		}
	})
	var errs []error
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite store: %w", err)
	}
	return nil
}

// migrate applies the pending migrations, each in its own write
// transaction (see sqlcore.Core.Migrate).
func (s *Store) migrate(ctx context.Context) error {
	return s.Migrate(ctx, sqlcore.MigrateParams{Migrations: migrations, Logger: s.log, Create: `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER NOT NULL PRIMARY KEY,
		applied_at INTEGER NOT NULL
	) STRICT`})
}

// errClosed is returned by writes after Close.
var errClosed = errors.New("sqlite store is closed")

// maxGroup bounds how many writes share one transaction.
const maxGroup = 64

type writeOp struct {
	ctx  context.Context
	fn   func(context.Context, *wtx) error
	done chan error
}

// maxStmts bounds the write connection's statement cache.
const maxStmts = 128

// wtx is a write transaction whose statements are prepared once per query
// text on the single write connection and reused (modernc's SQLite spends
// more on preparing a statement than on running a small one). A statement
// cannot be prepared on the connection while a transaction holds it, so a
// query seen for the first time runs unprepared and is prepared once the
// transaction is over.
type wtx struct {
	*sql.Tx
	s *Store
}

func (t *wtx) cached(ctx context.Context, query string) *sql.Stmt {
	st, ok := t.s.stmts[query]
	if !ok {
		if len(t.s.stmts)+len(t.s.toPrepare) < maxStmts {
			t.s.toPrepare[query] = true
		}
		return nil
	}
	return t.Tx.StmtContext(ctx, st)
}

// ExecContext runs query, prepared when it was seen before.
func (t *wtx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.cached(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

// QueryContext runs query, prepared when it was seen before.
func (t *wtx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.cached(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query, prepared when it was seen before.
func (t *wtx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.cached(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}

// PrepareContext returns the cached statement for query when there is one.
func (t *wtx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if st := t.cached(ctx, query); st != nil {
		return st, nil
	}
	return t.Tx.PrepareContext(ctx, query)
}

// prepareSeen prepares, outside any transaction, the queries first seen in
// the last one.
func (s *Store) prepareSeen() {
	for q := range s.toPrepare {
		if st, err := s.wdb.PrepareContext(context.Background(), q); err == nil {
			s.stmts[q] = st
		}
		delete(s.toPrepare, q)
	}
}

// write runs fn in a write transaction on the single write connection and
// returns once that transaction is committed (or fn failed).
//
// Group commit: writes that arrive while a transaction is being synced are
// run together in the next transaction, each inside its own SAVEPOINT, so
// one fsync acknowledges many enrollments. Each write stays atomic (a
// failing fn is rolled back to its savepoint and gets its error; the others
// commit), and nobody is answered before the commit that holds its write
// is durable. fn gets a context that keeps the caller's values but not its
// cancellation: an interrupted statement would roll back the whole shared
// transaction. A caller that gives up before its turn is skipped.
func (s *Store) write(ctx context.Context, fn func(context.Context, *wtx) error) error {
	if err := s.syncErr.Load(); err != nil {
		return *err
	}
	op := &writeOp{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case s.writes <- op:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return errClosed
	}
	return <-op.done
}

// committedGroup is a group of writes whose transaction has ended, with
// each write's result, waiting for the WAL sync that makes it durable.
type committedGroup struct {
	ops  []*writeOp
	errs []error
}

// writer runs queued writes in groups until Close, and hands each group,
// committed, to the syncer.
func (s *Store) writer() {
	defer close(s.writerDone)
	defer close(s.committed)
	for {
		var group []*writeOp
		select {
		case op := <-s.writes:
			group = append(group, op)
		case <-s.closing:
			return
		}
	more:
		for len(group) < maxGroup {
			select {
			case op := <-s.writes:
				group = append(group, op)
			default:
				break more
			}
		}
		s.committed <- committedGroup{group, s.commitGroup(group)}
		s.prepareSeen()
	}
}

// minSyncGap is the shortest time between the starts of two WAL syncs. A
// write on an idle store is synced at once; under load, commits that
// arrive within the gap share one sync (an fsync costs about 0.3 ms of a
// shared virtual disk here, and CPU with it), like PostgreSQL's
// commit_delay. It adds at most this much to a write's latency, caps syncs
// at 500 a second, and never holds the writer: the next transactions run
// meanwhile.
const minSyncGap = 2 * time.Millisecond

// syncer answers the writes of committed groups once the WAL holding them
// is on disk. One sync covers every group committed before it started,
// and groups are answered in commit order. Failed writes wait too: a
// refusal (say, "token already used") can rest on an earlier commit that
// is not durable yet.
func (s *Store) syncer() {
	defer close(s.syncerDone)
	var last time.Time
	for g := range s.committed {
		if wait := time.Until(last.Add(minSyncGap)); wait > 0 {
			time.Sleep(wait)
		}
		batch := []committedGroup{g}
	more:
		for {
			select {
			case g, ok := <-s.committed:
				if !ok {
					break more
				}
				batch = append(batch, g)
			default:
				break more
			}
		}
		last = time.Now()
		var syncErr error
		if prev := s.syncErr.Load(); prev != nil {
			syncErr = *prev
		} else if err := s.syncWAL(); err != nil {
			// After a failed fsync the kernel may have dropped the dirty
			// pages: what is on disk is unknown, so nothing more is
			// acknowledged until a restart recovers from the WAL.
			syncErr = fmt.Errorf("sqlite store: the write-ahead log could not be synced to disk, so this write may be lost; writes are refused until the server is restarted (check the disk): %w", err)
			s.log.Error("WAL sync failed; refusing writes", "err", err)
			s.syncErr.Store(&syncErr)
		}
		for _, g := range batch {
			for i, op := range g.ops {
				err := g.errs[i]
				if syncErr != nil {
					err = syncErr
				}
				op.done <- err
			}
		}
	}
}

// commitGroup runs group in one transaction and returns each write's
// result.
func (s *Store) commitGroup(group []*writeOp) []error {
	errs := make([]error, len(group))
	finish := func(groupErr error) []error {
		for i := range group {
			if errs[i] == nil {
				errs[i] = groupErr
			}
		}
		return errs
	}
	bg := context.Background()
	sqlTx, err := s.wdb.BeginTx(bg, nil)
	if err != nil {
		return finish(err)
	}
	tx := &wtx{Tx: sqlTx, s: s}
	if len(group) == 1 {
		// Alone in its transaction: no savepoint needed.
		op := group[0]
		if errs[0] = op.ctx.Err(); errs[0] == nil {
			errs[0] = op.fn(context.WithoutCancel(op.ctx), tx)
		}
		if errs[0] != nil {
			_ = tx.Rollback()
			return finish(nil)
		}
		return finish(tx.Commit())
	}
	for i, op := range group {
		if err := op.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if _, err := tx.ExecContext(bg, "SAVEPOINT w"); err != nil {
			_ = tx.Rollback()
			return finish(fmt.Errorf("savepoint: %w", err))
		}
		if errs[i] = op.fn(context.WithoutCancel(op.ctx), tx); errs[i] != nil {
			if _, err := tx.ExecContext(bg, "ROLLBACK TO w"); err != nil {
				_ = tx.Rollback()
				return finish(fmt.Errorf("roll back to savepoint: %w", err))
			}
		}
		if _, err := tx.ExecContext(bg, "RELEASE w"); err != nil {
			_ = tx.Rollback()
			return finish(fmt.Errorf("release savepoint: %w", err))
		}
	}
	return finish(tx.Commit())
}

// sqliteCode returns the extended result code of a SQLite error, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// isConflict reports a constraint violation that is the caller's doing.
func isConflict(err error) bool {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_TRIGGER:
		return true
	}
	return false
}

// ms converts a time to unix milliseconds; the zero time is NULL.
func ms(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}
