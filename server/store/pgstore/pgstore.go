// Package pgstore implements store.Store on PostgreSQL through
// github.com/jackc/pgx/v5 (pgxpool). It is the store for several server
// replicas sharing one database.
//
// Every guarantee is enforced by the database under the default READ
// COMMITTED isolation: a token is consumed by a conditional UPDATE (of
// concurrent consumers, the others block on the row lock and then see it
// used), a hostname has one active envoy through a partial unique index,
// and a revoked envoy stays revoked through a trigger. Under READ
// COMMITTED two forced enrollments of one hostname could race (both find no
// active envoy, or both try to replace the same one, and the loser hits the
// unique index); so every enrollment first takes a transaction-scoped
// advisory lock on its hostname, which runs the enrollments of one hostname
// one after the other across replicas: exactly one active envoy, the others
// revoked as replaced. Should the unique index still refuse a forced
// enrollment, its whole transaction is retried.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlcore"
)

// Options configures a Store. The zero value is usable.
type Options struct {
	// Logger receives migration messages. Nil discards logs.
	Logger *slog.Logger
	// MaxConns bounds the connection pool. Zero keeps pgxpool's default
	// (the larger of 4 and the number of CPUs), or pool_max_conns from the DSN.
	MaxConns int32
	// Now returns the current time, used when a record's time is zero and
	// to expire nonces. Nil means time.Now.
	Now func() time.Time
}

// Store is a store.Store on a PostgreSQL database. Its operations are
// sqlcore's, run on the pool and in retried transactions.
type Store struct {
	sqlcore.Core
	pool *pgxpool.Pool
	log  *slog.Logger
}

var _ store.Store = (*Store)(nil)

// Open connects to the database named by dsn (a postgres:// URL or a
// key=value string, as libpq takes) and applies pending migrations. A
// search_path parameter in the DSN selects the schema the store uses.
// Errors never contain the DSN, which may hold a password.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors redact the password.
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	s := &Store{log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "pgstore")
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s.pool = pool
	s.Core = sqlcore.New(sqlcore.Config{Dialect: coreDialect, Read: querier{pool}, Tx: s.tx, Now: opts.Now})
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s@%s:%d/%s: %w", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	return s, nil
}

// Close closes the connection pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// migrate applies pending migrations, each in a transaction that first
// takes an advisory lock for this schema, so replicas starting together
// apply each migration once.
func (s *Store) migrate(ctx context.Context) error {
	return s.Migrate(ctx, sqlcore.MigrateParams{
		Migrations: migrations,
		Logger:     s.log,
		Lock:       `SELECT pg_advisory_xact_lock(hashtext('vigo.schema_migrations.' || current_schema()))`,
		Create: `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     NOT NULL PRIMARY KEY,
			applied_at timestamptz NOT NULL
		)`,
	})
}

// maxAttempts bounds the retries of a transaction that lost a race.
const maxAttempts = 5

// tx runs fn in a transaction and commits it when fn returns nil. A
// transaction that PostgreSQL aborted for a deadlock or a serialization
// failure is retried.
func (s *Store) tx(ctx context.Context, fn func(context.Context, sqlcore.Querier) error) error {
	var err error
	for range maxAttempts {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return fn(ctx, querier{tx}) })
		if code := pgCode(err); code != "40P01" && code != "40001" {
			return err
		}
	}
	return err
}

// pgCode returns the SQLSTATE of a PostgreSQL error, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// isIntegrityErr reports a constraint violation (SQLSTATE class 23).
func isIntegrityErr(err error) bool {
	code := pgCode(err)
	return len(code) == 5 && code[:2] == "23"
}
