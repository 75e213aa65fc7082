package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlcore"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlq"
)

// The operations are sqlcore's; this file holds what is PostgreSQL's own.

// dialect is PostgreSQL's, for the queries built by sqlq.
var dialect = sqlq.Dialect{
	Placeholder: func(n int) string { return "$" + strconv.Itoa(n) },
	Time:        func(t time.Time) any { return t },
}

// advisoryHostname is the first key of the advisory locks that serialise
// the enrollments of one hostname ("VIGO" in ASCII).
const advisoryHostname int32 = 0x5649474f

// coreDialect is PostgreSQL's, for sqlcore.
var coreDialect = sqlcore.Dialect{
	Dialect:  dialect,
	Conflict: isIntegrityErr,
	HostnameTaken: func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "envoys_active_hostname"
	},
	// Enrollments of one hostname run one at a time across replicas: a
	// forced one then always sees the envoy it must replace. Taken first,
	// so every enrollment locks in the same order (hostname, token row,
	// envoy rows) and none can deadlock.
	LockHostname: func(ctx context.Context, q sqlcore.Querier, hostname string) error {
		_, err := q.Exec(ctx, `SELECT pg_advisory_xact_lock(?, hashtext(?))`, advisoryHostname, hostname)
		return err
	},
	// A nonce needs no durability: losing the last ones in a database
	// crash reopens a replay window of at most the clock-skew bound, for
	// requests that still need the envoy's key and mTLS. Not waiting for
	// the WAL flush keeps this per-check-in write cheap.
	NoncePrelude: `SET LOCAL synchronous_commit = off`,
	JSON:         func(b []byte) any { return b }, // a bytea column
}

// pgxQuerier is what *pgxpool.Pool and pgx.Tx have in common.
type pgxQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// querier is a sqlcore.Querier over pgx; it rebinds sqlcore's "?".
type querier struct{ q pgxQuerier }

func (q querier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.q.Exec(ctx, sqlcore.Rebind(query), args...)
	return tag.RowsAffected(), err
}

func (q querier) Query(ctx context.Context, query string, args ...any) (sqlcore.Rows, error) {
	rows, err := q.q.Query(ctx, sqlcore.Rebind(query), args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (q querier) QueryRow(ctx context.Context, query string, args ...any) sqlcore.Row {
	return q.q.QueryRow(ctx, sqlcore.Rebind(query), args...)
}

// RecordCheckins stores the latest check-in of each envoy with one
// UPDATE over arrays of the batch; an older check-in than the stored one
// changes nothing but a newer signed timestamp.
func (s *Store) RecordCheckins(ctx context.Context, cs []store.Checkin) error {
	if len(cs) == 0 {
		return nil
	}
	// UPDATE ... FROM applies one arbitrary source row per target row, so
	// keep only the latest check-in of each envoy, with the newest signed
	// timestamp of any of its check-ins.
	latest := make(map[string]int, len(cs))
	signed := make(map[string]time.Time, len(cs))
	for i, c := range cs {
		if j, ok := latest[c.UUID]; !ok || c.At.After(cs[j].At) {
			latest[c.UUID] = i
		}
		if c.Signed.After(signed[c.UUID]) {
			signed[c.UUID] = c.Signed
		}
	}
	uuids := make([]string, 0, len(latest))
	ats := make([]time.Time, 0, len(latest))
	versions := make([]string, 0, len(latest))
	addrs := make([]string, 0, len(latest))
	signeds := make([]*time.Time, 0, len(latest))
	for _, i := range latest {
		c := cs[i]
		uuids, ats, versions, addrs = append(uuids, c.UUID), append(ats, c.At), append(versions, c.AgentVersion), append(addrs, c.Addr)
		var sp *time.Time
		if t := signed[c.UUID]; !t.IsZero() {
			sp = &t
		}
		signeds = append(signeds, sp)
	}
	// SET expressions all read the row as it was; GREATEST skips NULLs.
	_, err := s.pool.Exec(ctx, `UPDATE envoys AS e SET
		agent_version = CASE WHEN e.last_seen IS NULL OR e.last_seen < c.at THEN c.version ELSE e.agent_version END,
		last_addr = CASE WHEN e.last_seen IS NULL OR e.last_seen < c.at THEN c.addr ELSE e.last_addr END,
		last_seen = GREATEST(e.last_seen, c.at),
		last_checkin_signed = GREATEST(e.last_checkin_signed, c.signed)
		FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::timestamptz[]) AS c (uuid, at, version, addr, signed)
		WHERE e.uuid = c.uuid AND (e.last_seen IS NULL OR e.last_seen < c.at
			OR c.signed IS NOT NULL AND (e.last_checkin_signed IS NULL OR e.last_checkin_signed < c.signed))`,
		uuids, ats, versions, addrs, signeds)
	if err != nil {
		return fmt.Errorf("record %d check-ins: %w", len(cs), err)
	}
	return nil
}
