// Package sqlcore is the one implementation of store.Store's operations
// that SQLite (sqlitestore) and PostgreSQL (pgstore) share: the column
// lists, the row scanners, the audit encoding, the conditional updates and
// how "no row changed" is explained. A backend brings what is genuinely
// its own through a Dialect (how a time is stored, which errors are
// constraint violations, a lock before an enrollment) and runs the
// statements: reads on its pool, writes in its transactions (SQLite's
// single writer with group commit, PostgreSQL's retried transactions).
//
// Queries are written with "?" placeholders; a backend whose driver wants
// another form rewrites them (Rebind) as it runs them.
package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlq"
)

// Querier runs statements: a backend's read pool, or a transaction.
type Querier interface {
	// Exec runs a statement and returns the number of rows it changed.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	// Query runs a query that returns rows.
	Query(ctx context.Context, query string, args ...any) (Rows, error)
	// QueryRow runs a query that returns at most one row; its Scan returns
	// an error that is sql.ErrNoRows when there was none.
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Row is one result row.
type Row interface {
	Scan(dest ...any) error
}

// Rows is a result set, read with Next and Scan and closed with Close.
type Rows interface {
	Row
	Next() bool
	Err() error
	Close()
}

// Dialect is what a backend adds to the shared operations.
type Dialect struct {
	// Dialect places arguments and encodes times in sqlq's queries; its
	// Time also encodes the times of every other statement.
	sqlq.Dialect
	// Conflict reports a constraint violation that is the caller's doing
	// (a duplicate id, a revoked envoy made active), to be returned as
	// store.ErrConflict.
	Conflict func(err error) bool
	// HostnameTaken reports the violation of the unique index on the
	// hostnames of active envoys.
	HostnameTaken func(err error) bool
	// LockHostname, when set, runs first in every enrollment's
	// transaction, to serialise the enrollments of one hostname.
	LockHostname func(ctx context.Context, q Querier, hostname string) error
	// NoncePrelude, when set, runs first in SeenNonce's transaction.
	NoncePrelude string
	// JSON converts an encoded JSON document to the stored form of the
	// policy revision's files column.
	JSON func([]byte) any
}

// Core implements the store.Store operations that both backends share.
// A backend embeds it.
type Core struct {
	d    Dialect
	read Querier
	tx   func(ctx context.Context, fn func(context.Context, Querier) error) error
	now  func() time.Time
}

// Config is what a backend gives New.
type Config struct {
	Dialect Dialect
	// Read runs the queries outside transactions.
	Read Querier
	// Tx runs fn in a write transaction and commits it when fn returns
	// nil. fn uses the context and the Querier it is given.
	Tx func(ctx context.Context, fn func(context.Context, Querier) error) error
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// New returns the shared operations over a backend.
func New(cfg Config) Core {
	c := Core{d: cfg.Dialect, read: cfg.Read, tx: cfg.Tx, now: cfg.Now}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// SchemaVersion returns the highest applied migration.
func (c *Core) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := c.read.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// orNow returns t, or now when t is zero.
func (c *Core) orNow(t time.Time) time.Time {
	if t.IsZero() {
		return c.now()
	}
	return t
}

// time encodes a time for a statement.
func (c *Core) time(t time.Time) any { return c.d.Time(t) }

// nullTime encodes a time for a statement; the zero time is NULL.
func (c *Core) nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return c.d.Time(t)
}

// conflict maps a constraint violation that is the caller's doing to
// store.ErrConflict, and leaves other errors alone.
func (c *Core) conflict(err error) error {
	if c.d.Conflict(err) {
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	}
	return err
}

// timeScanner scans a stored time into *t: NULL is the zero time, unix
// milliseconds (SQLite) and timestamps (PostgreSQL) become UTC times.
type timeScanner struct{ t *time.Time }

// Scan implements sql.Scanner.
func (s timeScanner) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*s.t = time.Time{}
	case int64:
		*s.t = time.UnixMilli(v).UTC()
	case time.Time:
		*s.t = v.UTC()
	default:
		return fmt.Errorf("scan %T into a time", v)
	}
	return nil
}

// tm scans a nullable time column into *t.
func tm(t *time.Time) timeScanner { return timeScanner{t} }

// noRows maps sql.ErrNoRows to store.ErrNotFound.
func noRows(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// collect reads every row of rows with scan.
func collect[T any](rows Rows, err error, scan func(Row) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// nonNil returns b, or an empty slice for nil (a NOT NULL blob).
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Rebind rewrites the "?" placeholders of query as $1, $2… (PostgreSQL).
// The queries hold no "?" in literals.
func Rebind(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] != '?' {
			b.WriteByte(query[i])
			continue
		}
		n++
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}

// SQLQuerier is what *sql.DB, *sql.Tx and *sql.Conn have in common.
type SQLQuerier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// SQL is a Querier over database/sql.
func SQL(q SQLQuerier) Querier { return sqlQuerier{q} }

type sqlQuerier struct{ q SQLQuerier }

func (q sqlQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	rows, err := q.q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (q sqlQuerier) QueryRow(ctx context.Context, query string, args ...any) Row {
	return q.q.QueryRowContext(ctx, query, args...)
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }
