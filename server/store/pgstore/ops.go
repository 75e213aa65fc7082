package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlq"
)

// querier is what *pgxpool.Pool and pgx.Tx have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ---- tokens ----

const tokenCols = `id, secret_hash, pattern, note, created_at, expires_at, used_at, used_by, revoked_at`

func scanToken(row pgx.Row) (store.Token, error) {
	var t store.Token
	var created, expires time.Time
	var used, revoked *time.Time
	if err := row.Scan(&t.ID, &t.SecretHash, &t.Pattern, &t.Note, &created, &expires, &used, &t.UsedBy, &revoked); err != nil {
		return store.Token{}, err
	}
	t.CreatedAt, t.ExpiresAt, t.UsedAt, t.RevokedAt = created.UTC(), expires.UTC(), fromTS(used), fromTS(revoked)
	return t, nil
}

// CreateToken stores a new token and appends audit in one transaction.
func (s *Store) CreateToken(ctx context.Context, t store.Token, audit store.AuditEvent) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		hash := t.SecretHash
		if hash == nil {
			hash = []byte{}
		}
		_, err := tx.Exec(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			t.ID, hash, t.Pattern, t.Note, s.orNow(t.CreatedAt), t.ExpiresAt, ts(t.UsedAt), t.UsedBy, ts(t.RevokedAt))
		if err != nil {
			return constraintErr(err)
		}
		return s.insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

// GetToken returns the token with this id, or store.ErrNotFound.
func (s *Store) GetToken(ctx context.Context, id string) (store.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Token{}, fmt.Errorf("get token %s: %w", id, err)
	}
	return t, nil
}

// ListTokens returns all tokens, newest first.
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenCols+` FROM tokens ORDER BY created_at DESC, id DESC`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var ts []store.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// RevokeToken marks an unused token revoked and appends audit.
func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time, audit store.AuditEvent) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL`,
			s.orNow(at), id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tokens WHERE id = $1)`, id).Scan(&exists); err != nil {
				return err
			}
			if !exists {
				return store.ErrNotFound
			}
			return store.ErrTokenUnavailable
		}
		return s.insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	return nil
}

// ---- admin tokens ----

const adminTokenCols = `id, name, role, secret_hash, created_at, revoked_at`

func scanAdminToken(sc interface{ Scan(...any) error }) (store.AdminToken, error) {
	var t store.AdminToken
	var revoked *time.Time
	if err := sc.Scan(&t.ID, &t.Name, &t.Role, &t.SecretHash, &t.CreatedAt, &revoked); err != nil {
		return store.AdminToken{}, err
	}
	t.CreatedAt = t.CreatedAt.UTC()
	if revoked != nil {
		t.RevokedAt = revoked.UTC()
	}
	return t, nil
}

// CreateAdminToken stores a named admin token and appends audit in one
// transaction.
func (s *Store) CreateAdminToken(ctx context.Context, t store.AdminToken, audit store.AuditEvent) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		hash := t.SecretHash
		if hash == nil {
			hash = []byte{}
		}
		_, err := tx.Exec(ctx, `INSERT INTO admin_tokens (`+adminTokenCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
			t.ID, t.Name, t.Role, hash, s.orNow(t.CreatedAt), ts(t.RevokedAt))
		if err != nil {
			return constraintErr(err)
		}
		return s.insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("create admin token %q: %w", t.Name, err)
	}
	return nil
}

// GetAdminToken returns the admin token with this id, or store.ErrNotFound.
func (s *Store) GetAdminToken(ctx context.Context, id string) (store.AdminToken, error) {
	t, err := scanAdminToken(s.pool.QueryRow(ctx, `SELECT `+adminTokenCols+` FROM admin_tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.AdminToken{}, fmt.Errorf("get admin token %s: %w", id, err)
	}
	return t, nil
}

// ListAdminTokens returns all admin tokens, newest first.
func (s *Store) ListAdminTokens(ctx context.Context) ([]store.AdminToken, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+adminTokenCols+` FROM admin_tokens ORDER BY created_at DESC, id DESC`)
	if err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	defer rows.Close()
	var ts []store.AdminToken
	for rows.Next() {
		t, err := scanAdminToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list admin tokens: %w", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	return ts, nil
}

// RevokeAdminToken revokes the active admin token named name and appends
// audit.
func (s *Store) RevokeAdminToken(ctx context.Context, name string, at time.Time, audit store.AuditEvent) (store.AdminToken, error) {
	var t store.AdminToken
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		t, err = scanAdminToken(tx.QueryRow(ctx, `UPDATE admin_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL
			RETURNING `+adminTokenCols, name, s.orNow(at).UTC().Truncate(time.Microsecond)))
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		audit.TokenID = t.ID
		return s.insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return store.AdminToken{}, fmt.Errorf("revoke admin token %q: %w", name, err)
	}
	return t, nil
}

// ---- envoys ----

const envoyCols = `uuid, hostname, public_key, cert_serial, cert_not_after, os, arch, source_ip, method, rule,
	policy_revision, token_id, created_at, status, revoked_at, revoked_reason, revoked_revision, replaced_by,
	last_seen, agent_version, last_addr, rebootstrap, update_version, last_checkin_signed, update_allow_downgrade`

func scanEnvoy(row pgx.Row) (store.Envoy, error) {
	var e store.Envoy
	var created time.Time
	var notAfter, revoked, lastSeen, signed *time.Time
	err := row.Scan(&e.UUID, &e.Hostname, &e.PublicKey, &e.CertSerial, &notAfter, &e.OS, &e.Arch, &e.SourceIP,
		&e.Method, &e.Rule, &e.PolicyRevision, &e.TokenID, &created, &e.Status, &revoked, &e.RevokedReason,
		&e.RevokedRevision, &e.ReplacedBy, &lastSeen, &e.AgentVersion, &e.LastAddr, &e.Rebootstrap, &e.UpdateVersion, &signed, &e.UpdateAllowDowngrade)
	if err != nil {
		return store.Envoy{}, err
	}
	e.CertNotAfter, e.CreatedAt, e.RevokedAt, e.LastSeen = fromTS(notAfter), created.UTC(), fromTS(revoked), fromTS(lastSeen)
	e.LastCheckinSigned = fromTS(signed)
	return e, nil
}

func collectEnvoys(rows pgx.Rows, err error) ([]store.Envoy, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var es []store.Envoy
	for rows.Next() {
		e, err := scanEnvoy(rows)
		if err != nil {
			return nil, err
		}
		es = append(es, e)
	}
	return es, rows.Err()
}

// advisoryHostname is the first key of the advisory locks that serialise
// the enrollments of one hostname ("VIGO" in ASCII).
const advisoryHostname int32 = 0x5649474f

// errRaceLost marks a forced enrollment that lost a race on the active
// hostname index; the transaction is retried.
var errRaceLost = errors.New("lost a race for the hostname")

// Enroll creates an envoy, consuming a token and replacing an active envoy
// with the same hostname when asked, in one transaction.
func (s *Store) Enroll(ctx context.Context, p store.EnrollParams) ([]store.Envoy, error) {
	now := s.orNow(p.Now)
	e := p.Envoy
	e.Status = store.StatusActive
	e.CreatedAt = s.orNow(e.CreatedAt)
	if e.PublicKey == nil {
		e.PublicKey = []byte{}
	}
	var replaced []store.Envoy
	enroll := func(tx pgx.Tx) error {
		replaced = nil
		// Enrollments of one hostname run one at a time across replicas:
		// a forced one then always sees the envoy it must replace. Taken
		// first, so every enrollment locks in the same order (hostname,
		// token row, envoy rows) and none can deadlock.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, advisoryHostname, e.Hostname); err != nil {
			return fmt.Errorf("lock hostname %s: %w", e.Hostname, err)
		}
		if p.TokenID != "" {
			// Conditional consume: concurrent consumers block on the row
			// lock, then re-check the condition and find the token used.
			tag, err := tx.Exec(ctx, `UPDATE tokens SET used_at = $1, used_by = $2
				WHERE id = $3 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1`,
				now, e.UUID, p.TokenID)
			if err != nil {
				return fmt.Errorf("consume token %s: %w", p.TokenID, err)
			}
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("consume token %s: %w", p.TokenID, store.ErrTokenUnavailable)
			}
		}
		if p.Force {
			var err error
			replaced, err = collectEnvoys(tx.Query(ctx, `UPDATE envoys
				SET status = 'revoked', revoked_at = $1, revoked_reason = $4, replaced_by = $2, changed_at = $5
				WHERE hostname = $3 AND status = 'active' RETURNING `+envoyCols,
				now, e.UUID, e.Hostname, p.ReplacedReason(), s.now()))
			if err != nil {
				return fmt.Errorf("replace envoy %s: %w", e.Hostname, err)
			}
			for _, old := range replaced {
				if err := s.insertAudit(ctx, tx, store.ReplacedEvent(old, e.UUID, p.ReplacedReason(), now, p.Audit)); err != nil {
					return err
				}
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO envoys (`+envoyCols+`, changed_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)`,
			e.UUID, e.Hostname, e.PublicKey, e.CertSerial, ts(e.CertNotAfter), e.OS, e.Arch, e.SourceIP, e.Method, e.Rule,
			e.PolicyRevision, e.TokenID, e.CreatedAt, e.Status, ts(e.RevokedAt), e.RevokedReason,
			e.RevokedRevision, e.ReplacedBy, ts(e.LastSeen), e.AgentVersion, e.LastAddr, e.Rebootstrap, e.UpdateVersion,
			ts(e.LastCheckinSigned), e.UpdateAllowDowngrade, s.now())
		if err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "envoys_active_hostname" {
				if p.Force {
					// Another writer committed an active envoy for this
					// hostname after our UPDATE looked (one that does not
					// take the hostname lock, e.g. an older version): start
					// again, and this time replace it.
					return errRaceLost
				}
				return fmt.Errorf("insert envoy %s: %w", e.Hostname, store.ErrHostnameTaken)
			}
			if isIntegrityErr(err) {
				return fmt.Errorf("insert envoy: uuid %s already used: %w", e.UUID, store.ErrConflict)
			}
			return fmt.Errorf("insert envoy: %w", err)
		}
		return s.insertAudit(ctx, tx, p.Audit)
	}
	var err error
	for range maxAttempts {
		if err = s.tx(ctx, enroll); !errors.Is(err, errRaceLost) {
			break
		}
	}
	if errors.Is(err, errRaceLost) {
		err = fmt.Errorf("insert envoy %s: %w", e.Hostname, store.ErrHostnameTaken)
	}
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", e.UUID, err)
	}
	return replaced, nil
}

// GetEnvoy returns the envoy with this UUID, or store.ErrNotFound.
func (s *Store) GetEnvoy(ctx context.Context, uuid string) (store.Envoy, error) {
	e, err := scanEnvoy(s.pool.QueryRow(ctx, `SELECT `+envoyCols+` FROM envoys WHERE uuid = $1`, uuid))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Envoy{}, fmt.Errorf("get envoy %s: %w", uuid, err)
	}
	return e, nil
}

// GetActiveEnvoyByHostname returns the active envoy with this hostname, or
// store.ErrNotFound.
func (s *Store) GetActiveEnvoyByHostname(ctx context.Context, hostname string) (store.Envoy, error) {
	e, err := scanEnvoy(s.pool.QueryRow(ctx, `SELECT `+envoyCols+` FROM envoys WHERE hostname = $1 AND status = 'active'`, hostname))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Envoy{}, fmt.Errorf("get active envoy %s: %w", hostname, err)
	}
	return e, nil
}

// ListEnvoys returns envoys matching f, ordered by created_at then uuid
// (by changed_at then uuid with f.ChangedSince).
func (s *Store) ListEnvoys(ctx context.Context, f store.EnvoyFilter) ([]store.Envoy, error) {
	q := `SELECT ` + envoyCols + ` FROM envoys WHERE true`
	var args []any
	if f.Status != "" {
		args = append(args, f.Status)
		q += fmt.Sprintf(` AND status = $%d`, len(args))
	}
	if f.Hostname != "" {
		args = append(args, f.Hostname)
		q += fmt.Sprintf(` AND hostname = $%d`, len(args))
	}
	if !f.ChangedSince.IsZero() {
		args = append(args, f.ChangedSince)
		q += fmt.Sprintf(` AND changed_at >= $%d ORDER BY changed_at, uuid`, len(args))
	} else {
		q += ` ORDER BY created_at, uuid`
	}
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	es, err := collectEnvoys(s.pool.Query(ctx, q, args...))
	if err != nil {
		return nil, fmt.Errorf("list envoys: %w", err)
	}
	return es, nil
}

// dialect is PostgreSQL's, for the queries built by sqlq.
var dialect = sqlq.Dialect{
	Placeholder: func(n int) string { return "$" + strconv.Itoa(n) },
	Time:        func(t time.Time) any { return t },
}

// QueryEnvoys returns a page of the envoys matching q, in q's order.
func (s *Store) QueryEnvoys(ctx context.Context, q store.EnvoyQuery) ([]store.Envoy, error) {
	clauses, args, reversed := sqlq.Envoys(q, dialect)
	es, err := collectEnvoys(s.pool.Query(ctx, `SELECT `+envoyCols+` FROM envoys`+clauses, args...))
	if err != nil {
		return nil, fmt.Errorf("query envoys: %w", err)
	}
	if reversed {
		slices.Reverse(es)
	}
	return es, nil
}

// CountEnvoys counts the envoys matching q's filters, at most q.Limit.
func (s *Store) CountEnvoys(ctx context.Context, q store.EnvoyQuery) (int, error) {
	query, args := sqlq.CountEnvoys(q, dialect)
	var n int
	if err := s.pool.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count envoys: %w", err)
	}
	return n, nil
}

// RevokeEnvoys revokes the active envoys matched by rs. A Revocation with
// both UUID and Hostname set revokes the envoy with that UUID and the
// active envoy with that hostname; one with neither matches nothing.
func (s *Store) RevokeEnvoys(ctx context.Context, rs []store.Revocation) ([]store.Envoy, error) {
	var revoked []store.Envoy
	err := s.tx(ctx, func(tx pgx.Tx) error {
		revoked = nil
		for _, r := range rs {
			if r.UUID == "" && r.Hostname == "" {
				continue
			}
			at := s.orNow(r.At)
			es, err := collectEnvoys(tx.Query(ctx, `UPDATE envoys
				SET status = 'revoked', revoked_at = $1, revoked_reason = $2, revoked_revision = $3, changed_at = $6
				WHERE status = 'active' AND (($4::text <> '' AND uuid = $4) OR ($5::text <> '' AND hostname = $5))
				RETURNING `+envoyCols,
				at, r.Reason, r.Revision, r.UUID, r.Hostname, s.now()))
			if err != nil {
				return err
			}
			for _, e := range es {
				err := s.insertAudit(ctx, tx, store.RevokedEvent(e, r, at))
				if err != nil {
					return err
				}
			}
			revoked = append(revoked, es...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("revoke envoys: %w", err)
	}
	return revoked, nil
}

// activeOrWhy explains why an update conditioned on an active envoy
// touched no row: store.ErrNotFound, store.ErrEnvoyRevoked, or nil when the
// envoy is active (the other condition failed).
func activeOrWhy(ctx context.Context, q querier, uuid string) error {
	var status string
	err := q.QueryRow(ctx, `SELECT status FROM envoys WHERE uuid = $1`, uuid).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	if status != store.StatusActive {
		return store.ErrEnvoyRevoked
	}
	return nil
}

// SetEnvoyFlags sets the pending actions of an active envoy and appends audit.
func (s *Store) SetEnvoyFlags(ctx context.Context, uuid string, f store.EnvoyFlags, audit store.AuditEvent) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE envoys SET rebootstrap = $1, update_version = $2, update_allow_downgrade = $5, changed_at = $4 WHERE uuid = $3 AND status = 'active'`,
			f.Rebootstrap, f.UpdateVersion, uuid, s.now(), f.UpdateAllowDowngrade)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			if err := activeOrWhy(ctx, tx, uuid); err != nil {
				return err
			}
			return store.ErrConflict
		}
		return s.insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("set flags of envoy %s: %w", uuid, err)
	}
	return nil
}

// RenewCertificate records a new certificate for an active envoy whose
// current serial is p.OldSerial.
func (s *Store) RenewCertificate(ctx context.Context, p store.RenewParams) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE envoys SET cert_serial = $1, cert_not_after = $2, public_key = COALESCE($3, public_key), changed_at = $6
			WHERE uuid = $4 AND status = 'active' AND cert_serial = $5`,
			p.NewSerial, ts(p.NotAfter), p.PublicKey, p.UUID, p.OldSerial, s.now()) // nil PublicKey is NULL: keep
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			if err := activeOrWhy(ctx, tx, p.UUID); err != nil {
				return err
			}
			return store.ErrConflict // the serial changed meanwhile
		}
		return s.insertAudit(ctx, tx, p.Audit)
	})
	if err != nil {
		return fmt.Errorf("renew certificate of envoy %s: %w", p.UUID, err)
	}
	return nil
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

// SeenNonce records a nonce until expires and reports whether it was
// already recorded. Of concurrent inserts of one key, the later ones wait
// for the first to commit and then do nothing.
func (s *Store) SeenNonce(ctx context.Context, envoyUUID string, nonce []byte, expires time.Time) (bool, error) {
	var seen bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		// A nonce needs no durability: losing the last ones in a database
		// crash reopens a replay window of at most the clock-skew bound,
		// for requests that still need the envoy's key and mTLS. Not
		// waiting for the WAL flush keeps this per-check-in write cheap.
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		// Only this envoy's expired nonces: Prune sweeps the rest.
		if _, err := tx.Exec(ctx, `DELETE FROM nonces WHERE envoy_uuid = $1 AND expires_at <= $2`, envoyUUID, s.now()); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO nonces (envoy_uuid, nonce, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT (envoy_uuid, nonce) DO NOTHING`, envoyUUID, nonce, expires)
		if err != nil {
			return err
		}
		seen = tag.RowsAffected() == 0
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record nonce of envoy %s: %w", envoyUUID, err)
	}
	return seen, nil
}

// ---- audit ----

func (s *Store) insertAudit(ctx context.Context, q querier, ev store.AuditEvent) error {
	var details *string
	if len(ev.Details) > 0 {
		b, err := json.Marshal(ev.Details)
		if err != nil {
			return fmt.Errorf("encode audit details: %w", err)
		}
		str := string(b)
		details = &str
	}
	_, err := q.Exec(ctx, `INSERT INTO audit (at, type, result, hostname, source_ip, method, rule, revision,
		token_id, envoy_uuid, reason, replica, details, actor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		s.orNow(ev.At), ev.Type, ev.Result, ev.Hostname, ev.SourceIP, ev.Method, ev.Rule, ev.Revision,
		ev.TokenID, ev.EnvoyUUID, ev.Reason, ev.Replica, details, ev.Actor)
	if err != nil {
		return fmt.Errorf("append audit %s: %w", ev.Type, err)
	}
	return nil
}

// AppendAudit appends events in one transaction. An event with a zero At
// is stamped with the current time.
func (s *Store) AppendAudit(ctx context.Context, evs ...store.AuditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		for _, ev := range evs {
			if err := s.insertAudit(ctx, tx, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	return nil
}

// ListAudit returns events with At >= since, oldest first, at most limit
// (0 = no limit).
func (s *Store) ListAudit(ctx context.Context, since time.Time, limit int) ([]store.AuditEvent, error) {
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	evs, err := collectAudit(s.pool.Query(ctx, `SELECT `+auditCols+` FROM audit WHERE at >= $1 ORDER BY at, id LIMIT $2::bigint`,
		since, lim))
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return evs, nil
}

// QueryAudit returns the events matching q, newest first.
func (s *Store) QueryAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEvent, error) {
	clauses, args := sqlq.Audit(q, dialect)
	evs, err := collectAudit(s.pool.Query(ctx, `SELECT `+auditCols+` FROM audit`+clauses, args...))
	if err != nil {
		return nil, fmt.Errorf("query audit: %w", err)
	}
	return evs, nil
}

// CountAudit counts events since a time by type, result, method and
// generalised reason.
func (s *Store) CountAudit(ctx context.Context, since time.Time, types ...string) ([]store.AuditCount, error) {
	query, args := sqlq.CountAudit(since, types, dialect)
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("count audit: %w", err)
	}
	defer rows.Close()
	var out []store.AuditCount
	for rows.Next() {
		var c store.AuditCount
		if err := rows.Scan(&c.Type, &c.Result, &c.Method, &c.Reason, &c.Count); err != nil {
			return nil, fmt.Errorf("count audit: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count audit: %w", err)
	}
	return out, nil
}

const auditCols = `id, at, type, result, hostname, source_ip, method, rule, revision, token_id, envoy_uuid, reason, replica, details, actor`

func collectAudit(rows pgx.Rows, err error) ([]store.AuditEvent, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var evs []store.AuditEvent
	for rows.Next() {
		var ev store.AuditEvent
		var details *string
		if err := rows.Scan(&ev.ID, &ev.At, &ev.Type, &ev.Result, &ev.Hostname, &ev.SourceIP, &ev.Method, &ev.Rule,
			&ev.Revision, &ev.TokenID, &ev.EnvoyUUID, &ev.Reason, &ev.Replica, &details, &ev.Actor); err != nil {
			return nil, err
		}
		ev.At = ev.At.UTC()
		if details != nil && *details != "" {
			if err := json.Unmarshal([]byte(*details), &ev.Details); err != nil {
				return nil, fmt.Errorf("decode details of event %d: %w", ev.ID, err)
			}
		}
		evs = append(evs, ev)
	}
	return evs, rows.Err()
}

// ---- policy revision ----

// SavePolicyRevision replaces the saved policy revision.
func (s *Store) SavePolicyRevision(ctx context.Context, r store.PolicyRevision) error {
	files, err := json.Marshal(r.Files) // []byte contents become base64
	if err != nil {
		return fmt.Errorf("save policy revision %s: encode files: %w", r.ID, err)
	}
	spec := r.Spec
	if spec == nil {
		spec = []byte{}
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO policy_revision (singleton, id, source, files, spec, signer, applied_at)
		VALUES (1, $1, $2, $3, $4, $5, $6)
		ON CONFLICT (singleton) DO UPDATE SET id = excluded.id, source = excluded.source, files = excluded.files,
			spec = excluded.spec, signer = excluded.signer, applied_at = excluded.applied_at`,
		r.ID, r.Source, files, spec, r.Signer, ts(r.AppliedAt))
	if err != nil {
		return fmt.Errorf("save policy revision %s: %w", r.ID, err)
	}
	return nil
}

// LoadPolicyRevision returns the saved revision, or store.ErrNotFound.
func (s *Store) LoadPolicyRevision(ctx context.Context) (store.PolicyRevision, error) {
	var r store.PolicyRevision
	var files []byte
	var applied *time.Time
	err := s.pool.QueryRow(ctx, `SELECT id, source, files, spec, signer, applied_at FROM policy_revision WHERE singleton = 1`).
		Scan(&r.ID, &r.Source, &files, &r.Spec, &r.Signer, &applied)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.PolicyRevision{}, fmt.Errorf("load policy revision: %w", err)
	}
	if err := json.Unmarshal(files, &r.Files); err != nil {
		return store.PolicyRevision{}, fmt.Errorf("load policy revision %s: decode files: %w", r.ID, err)
	}
	r.AppliedAt = fromTS(applied)
	if len(r.Spec) == 0 {
		r.Spec = nil
	}
	return r, nil
}

// SavePolicyRefusal remembers a refused revision of a replica.
func (s *Store) SavePolicyRefusal(ctx context.Context, r store.PolicyRefusal) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO policy_refusals (replica, revision, kind, limits, errors, at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (replica, revision) DO UPDATE SET kind = excluded.kind, limits = excluded.limits,
				errors = excluded.errors, at = excluded.at`,
			r.Replica, r.Revision, r.Kind, r.Limits, r.Errors, r.At.UTC()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM policy_refusals WHERE replica = $1 AND revision NOT IN
			(SELECT revision FROM policy_refusals WHERE replica = $1 ORDER BY at DESC, revision LIMIT $2)`,
			r.Replica, store.MaxPolicyRefusals)
		return err
	})
	if err != nil {
		return fmt.Errorf("save policy refusal %s: %w", r.Revision, err)
	}
	return nil
}

// ListPolicyRefusals returns the refusals of a replica, newest first.
func (s *Store) ListPolicyRefusals(ctx context.Context, replica string) ([]store.PolicyRefusal, error) {
	rows, err := s.pool.Query(ctx, `SELECT replica, revision, kind, limits, errors, at FROM policy_refusals
		WHERE replica = $1 ORDER BY at DESC, revision LIMIT $2`, replica, store.MaxPolicyRefusals)
	if err != nil {
		return nil, fmt.Errorf("list policy refusals: %w", err)
	}
	defer rows.Close()
	var out []store.PolicyRefusal
	for rows.Next() {
		var r store.PolicyRefusal
		if err := rows.Scan(&r.Replica, &r.Revision, &r.Kind, &r.Limits, &r.Errors, &r.At); err != nil {
			return nil, fmt.Errorf("list policy refusals: %w", err)
		}
		r.At = r.At.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list policy refusals: %w", err)
	}
	return out, nil
}

// ---- maintenance ----

// Prune deletes audit events older than before, envoys revoked before
// before and expired nonces. The UUIDs of deleted envoys are kept so they
// are never reused.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		total = 0
		tag, err := tx.Exec(ctx, `DELETE FROM audit WHERE at < $1`, before)
		if err != nil {
			return err
		}
		total += tag.RowsAffected()
		if _, err := tx.Exec(ctx, `INSERT INTO retired_envoys (uuid)
			SELECT uuid FROM envoys WHERE status = 'revoked' AND revoked_at < $1
			ON CONFLICT DO NOTHING`, before); err != nil {
			return err
		}
		tag, err = tx.Exec(ctx, `DELETE FROM envoys WHERE status = 'revoked' AND revoked_at < $1`, before)
		if err != nil {
			return err
		}
		total += tag.RowsAffected()
		tag, err = tx.Exec(ctx, `DELETE FROM nonces WHERE expires_at <= $1`, s.now())
		if err != nil {
			return err
		}
		total += tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return total, nil
}

// ---- policy history and control ----

// SavePolicyHistory records an applied revision.
func (s *Store) SavePolicyHistory(ctx context.Context, h store.PolicyHistory) error {
	spec := h.Spec
	if spec == nil {
		spec = []byte{}
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO policy_history (id, name, subject, author, signer, spec, applied_at, replica)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, subject = excluded.subject, author = excluded.author,
				signer = excluded.signer, spec = excluded.spec, applied_at = excluded.applied_at, replica = excluded.replica`,
			h.ID, h.Name, h.Subject, h.Author, h.Signer, spec, h.AppliedAt.UTC(), h.Replica); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM policy_history WHERE id NOT IN
			(SELECT id FROM policy_history ORDER BY applied_at DESC, id LIMIT $1)`, store.MaxPolicyHistory)
		return err
	})
	if err != nil {
		return fmt.Errorf("save policy history %s: %w", h.ID, err)
	}
	return nil
}

const historyColumns = `id, name, subject, author, signer, spec, applied_at, replica`

func scanHistory(r pgx.Row) (store.PolicyHistory, error) {
	var h store.PolicyHistory
	err := r.Scan(&h.ID, &h.Name, &h.Subject, &h.Author, &h.Signer, &h.Spec, &h.AppliedAt, &h.Replica)
	h.AppliedAt = h.AppliedAt.UTC()
	return h, err
}

// ListPolicyHistory returns the applied revisions, newest first.
func (s *Store) ListPolicyHistory(ctx context.Context, limit int) ([]store.PolicyHistory, error) {
	if limit <= 0 {
		limit = store.MaxPolicyHistory
	}
	rows, err := s.pool.Query(ctx, `SELECT `+historyColumns+` FROM policy_history ORDER BY applied_at DESC, id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list policy history: %w", err)
	}
	defer rows.Close()
	var out []store.PolicyHistory
	for rows.Next() {
		h, err := scanHistory(rows)
		if err != nil {
			return nil, fmt.Errorf("list policy history: %w", err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list policy history: %w", err)
	}
	return out, nil
}

// GetPolicyHistory returns the record of an applied revision.
func (s *Store) GetPolicyHistory(ctx context.Context, id string) (store.PolicyHistory, error) {
	h, err := scanHistory(s.pool.QueryRow(ctx, `SELECT `+historyColumns+` FROM policy_history WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.PolicyHistory{}, fmt.Errorf("get policy history %s: %w", id, err)
	}
	return h, nil
}

// GetPolicyControl returns the shared suspend and pin state.
func (s *Store) GetPolicyControl(ctx context.Context) (store.PolicyControl, error) {
	var c store.PolicyControl
	var suspendedAt, pinnedAt *time.Time
	err := s.pool.QueryRow(ctx, `SELECT suspended, suspend_reason, suspended_by, suspended_at, pinned, pin_reason, pinned_by, pinned_at
		FROM policy_control WHERE singleton = 1`).
		Scan(&c.Suspended, &c.SuspendReason, &c.SuspendedBy, &suspendedAt, &c.Pinned, &c.PinReason, &c.PinnedBy, &pinnedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.PolicyControl{}, nil
	}
	if err != nil {
		return store.PolicyControl{}, fmt.Errorf("get policy control: %w", err)
	}
	c.SuspendedAt, c.PinnedAt = fromTS(suspendedAt), fromTS(pinnedAt)
	return c, nil
}

// SetPolicyControl replaces the shared suspend and pin state and appends audit.
func (s *Store) SetPolicyControl(ctx context.Context, c store.PolicyControl, audit store.AuditEvent) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO policy_control (singleton, suspended, suspend_reason, suspended_by, suspended_at,
				pinned, pin_reason, pinned_by, pinned_at)
			VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (singleton) DO UPDATE SET suspended = excluded.suspended, suspend_reason = excluded.suspend_reason,
				suspended_by = excluded.suspended_by, suspended_at = excluded.suspended_at, pinned = excluded.pinned,
				pin_reason = excluded.pin_reason, pinned_by = excluded.pinned_by, pinned_at = excluded.pinned_at`,
			c.Suspended, c.SuspendReason, c.SuspendedBy, ts(c.SuspendedAt), c.Pinned, c.PinReason, c.PinnedBy, ts(c.PinnedAt)); err != nil {
			return err
		}
		return s.insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("set policy control: %w", err)
	}
	return nil
}
