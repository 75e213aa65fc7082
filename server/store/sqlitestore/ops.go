package sqlitestore

import (
	"context"
	"fmt"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlcore"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlq"
)

// The operations are sqlcore's; this file holds what is SQLite's own.

// dialect is SQLite's, for the queries built by sqlq.
var dialect = sqlq.Dialect{
	Placeholder: func(int) string { return "?" },
	Time:        func(t time.Time) any { return t.UnixMilli() },
	// The store runs no ANALYZE: without statistics SQLite takes an
	// equality on an indexed column for a rare one.
	Common: func(cond string) string { return "likelihood(" + cond + ", 0.9)" },
}

// coreDialect is SQLite's, for sqlcore.
var coreDialect = sqlcore.Dialect{
	Dialect:  dialect,
	Conflict: isConflict,
	// The only UNIQUE index besides the primary keys is the partial one on
	// active hostnames.
	HostnameTaken: func(err error) bool { return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_UNIQUE },
	JSON:          func(b []byte) any { return string(b) }, // a TEXT column
}

// tx runs fn in a write transaction (see write).
func (s *Store) tx(ctx context.Context, fn func(context.Context, sqlcore.Querier) error) error {
	return s.write(ctx, func(ctx context.Context, tx *wtx) error { return fn(ctx, sqlcore.SQL(tx)) })
}

// RecordCheckins stores the latest check-in of each envoy in one
// transaction; an older check-in than the stored one changes nothing but
// a newer signed timestamp.
func (s *Store) RecordCheckins(ctx context.Context, cs []store.Checkin) error {
	if len(cs) == 0 {
		return nil
	}
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		// SET expressions all read the row as it was. max() of SQLite is
		// NULL when an argument is, hence the COALESCE and NULLIF.
		stmt, err := tx.PrepareContext(ctx, `UPDATE envoys SET
			agent_version = CASE WHEN last_seen IS NULL OR last_seen < ?1 THEN ?2 ELSE agent_version END,
			last_addr = CASE WHEN last_seen IS NULL OR last_seen < ?1 THEN ?3 ELSE last_addr END,
			last_seen = CASE WHEN last_seen IS NULL OR last_seen < ?1 THEN ?1 ELSE last_seen END,
			last_checkin_signed = NULLIF(max(COALESCE(last_checkin_signed, 0), COALESCE(?5, 0)), 0)
			WHERE uuid = ?4 AND (last_seen IS NULL OR last_seen < ?1
				OR ?5 IS NOT NULL AND (last_checkin_signed IS NULL OR last_checkin_signed < ?5))`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, c := range cs {
			if _, err := stmt.ExecContext(ctx, c.At.UnixMilli(), c.AgentVersion, c.Addr, c.UUID, ms(c.Signed)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record %d check-ins: %w", len(cs), err)
	}
	return nil
}
