package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlq"
)

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// ---- tokens ----

const tokenCols = `id, secret_hash, pattern, note, created_at, expires_at, used_at, used_by, revoked_at`

func scanToken(sc interface{ Scan(...any) error }) (store.Token, error) {
	var t store.Token
	var created, expires, used, revoked sql.NullInt64
	if err := sc.Scan(&t.ID, &t.SecretHash, &t.Pattern, &t.Note, &created, &expires, &used, &t.UsedBy, &revoked); err != nil {
		return store.Token{}, err
	}
	t.CreatedAt, t.ExpiresAt, t.UsedAt, t.RevokedAt = fromMS(created), fromMS(expires), fromMS(used), fromMS(revoked)
	return t, nil
}

// CreateToken stores a new token and appends audit in one transaction.
func (s *Store) CreateToken(ctx context.Context, t store.Token, audit store.AuditEvent) error {
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		hash := t.SecretHash
		if hash == nil {
			hash = []byte{}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			t.ID, hash, t.Pattern, t.Note, s.orNow(t.CreatedAt).UnixMilli(), t.ExpiresAt.UnixMilli(),
			ms(t.UsedAt), t.UsedBy, ms(t.RevokedAt))
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
	t, err := scanToken(s.rdb.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Token{}, fmt.Errorf("get token %s: %w", id, err)
	}
	return t, nil
}

// ListTokens returns all tokens, newest first.
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+tokenCols+` FROM tokens ORDER BY created_at DESC, id DESC`)
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
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL`,
			s.orNow(at).UnixMilli(), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM tokens WHERE id = ?`, id).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return store.ErrNotFound
			}
			if err != nil {
				return err
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
	var created, revoked sql.NullInt64
	if err := sc.Scan(&t.ID, &t.Name, &t.Role, &t.SecretHash, &created, &revoked); err != nil {
		return store.AdminToken{}, err
	}
	t.CreatedAt, t.RevokedAt = fromMS(created), fromMS(revoked)
	return t, nil
}

// CreateAdminToken stores a named admin token and appends audit in one
// transaction.
func (s *Store) CreateAdminToken(ctx context.Context, t store.AdminToken, audit store.AuditEvent) error {
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		hash := t.SecretHash
		if hash == nil {
			hash = []byte{}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO admin_tokens (`+adminTokenCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
			t.ID, t.Name, t.Role, hash, s.orNow(t.CreatedAt).UnixMilli(), ms(t.RevokedAt))
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
	t, err := scanAdminToken(s.rdb.QueryRowContext(ctx, `SELECT `+adminTokenCols+` FROM admin_tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.AdminToken{}, fmt.Errorf("get admin token %s: %w", id, err)
	}
	return t, nil
}

// ListAdminTokens returns all admin tokens, newest first.
func (s *Store) ListAdminTokens(ctx context.Context) ([]store.AdminToken, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+adminTokenCols+` FROM admin_tokens ORDER BY created_at DESC, id DESC`)
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
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		var err error
		t, err = scanAdminToken(tx.QueryRowContext(ctx, `SELECT `+adminTokenCols+` FROM admin_tokens WHERE name = ? AND revoked_at IS NULL`, name))
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		t.RevokedAt = s.orNow(at).UTC().Truncate(time.Millisecond)
		if _, err := tx.ExecContext(ctx, `UPDATE admin_tokens SET revoked_at = ? WHERE id = ?`, t.RevokedAt.UnixMilli(), t.ID); err != nil {
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

func scanEnvoy(sc interface{ Scan(...any) error }) (store.Envoy, error) {
	var e store.Envoy
	var notAfter, created, revoked, lastSeen, signed sql.NullInt64
	err := sc.Scan(&e.UUID, &e.Hostname, &e.PublicKey, &e.CertSerial, &notAfter, &e.OS, &e.Arch, &e.SourceIP,
		&e.Method, &e.Rule, &e.PolicyRevision, &e.TokenID, &created, &e.Status, &revoked, &e.RevokedReason,
		&e.RevokedRevision, &e.ReplacedBy, &lastSeen, &e.AgentVersion, &e.LastAddr, &e.Rebootstrap, &e.UpdateVersion, &signed, &e.UpdateAllowDowngrade)
	if err != nil {
		return store.Envoy{}, err
	}
	e.CertNotAfter, e.CreatedAt, e.RevokedAt, e.LastSeen = fromMS(notAfter), fromMS(created), fromMS(revoked), fromMS(lastSeen)
	e.LastCheckinSigned = fromMS(signed)
	return e, nil
}

func collectEnvoys(rows *sql.Rows, err error) ([]store.Envoy, error) {
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
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		replaced = nil
		if p.TokenID != "" {
			// Conditional consume: of concurrent uses of one token, exactly
			// one updates the row.
			res, err := tx.ExecContext(ctx, `UPDATE tokens SET used_at = ?, used_by = ?
				WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?`,
				now.UnixMilli(), e.UUID, p.TokenID, now.UnixMilli())
			if err != nil {
				return fmt.Errorf("consume token %s: %w", p.TokenID, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				return fmt.Errorf("consume token %s: %w", p.TokenID, store.ErrTokenUnavailable)
			}
		}
		if p.Force {
			var err error
			replaced, err = collectEnvoys(tx.QueryContext(ctx, `UPDATE envoys
				SET status = 'revoked', revoked_at = ?, revoked_reason = ?, replaced_by = ?, changed_at = ?
				WHERE hostname = ? AND status = 'active' RETURNING `+envoyCols,
				now.UnixMilli(), p.ReplacedReason(), e.UUID, s.now().UnixMilli(), e.Hostname))
			if err != nil {
				return fmt.Errorf("replace envoy %s: %w", e.Hostname, err)
			}
			for _, old := range replaced {
				ev := store.ReplacedEvent(old, e.UUID, p.ReplacedReason(), now, p.Audit)
				if err := s.insertAudit(ctx, tx, ev); err != nil {
					return err
				}
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO envoys (`+envoyCols+`, changed_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			e.UUID, e.Hostname, e.PublicKey, e.CertSerial, ms(e.CertNotAfter), e.OS, e.Arch, e.SourceIP, e.Method, e.Rule,
			e.PolicyRevision, e.TokenID, e.CreatedAt.UnixMilli(), e.Status, ms(e.RevokedAt), e.RevokedReason,
			e.RevokedRevision, e.ReplacedBy, ms(e.LastSeen), e.AgentVersion, e.LastAddr, e.Rebootstrap, e.UpdateVersion,
			ms(e.LastCheckinSigned), e.UpdateAllowDowngrade, s.now().UnixMilli())
		if err != nil {
			switch sqliteCode(err) {
			case sqlite3.SQLITE_CONSTRAINT_UNIQUE:
				// The only UNIQUE index besides the primary key is the
				// partial one on active hostnames.
				return fmt.Errorf("insert envoy %s: %w", e.Hostname, store.ErrHostnameTaken)
			case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_TRIGGER:
				return fmt.Errorf("insert envoy: uuid %s already used: %w", e.UUID, store.ErrConflict)
			}
			return fmt.Errorf("insert envoy: %w", err)
		}
		return s.insertAudit(ctx, tx, p.Audit)
	})
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", e.UUID, err)
	}
	return replaced, nil
}

// GetEnvoy returns the envoy with this UUID, or store.ErrNotFound.
func (s *Store) GetEnvoy(ctx context.Context, uuid string) (store.Envoy, error) {
	e, err := getEnvoy(ctx, s.rdb, uuid)
	if err != nil {
		return store.Envoy{}, fmt.Errorf("get envoy %s: %w", uuid, err)
	}
	return e, nil
}

func getEnvoy(ctx context.Context, q querier, uuid string) (store.Envoy, error) {
	e, err := scanEnvoy(q.QueryRowContext(ctx, `SELECT `+envoyCols+` FROM envoys WHERE uuid = ?`, uuid))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Envoy{}, store.ErrNotFound
	}
	return e, err
}

// GetActiveEnvoyByHostname returns the active envoy with this hostname, or
// store.ErrNotFound.
func (s *Store) GetActiveEnvoyByHostname(ctx context.Context, hostname string) (store.Envoy, error) {
	e, err := scanEnvoy(s.rdb.QueryRowContext(ctx, `SELECT `+envoyCols+` FROM envoys WHERE hostname = ? AND status = 'active'`, hostname))
	if errors.Is(err, sql.ErrNoRows) {
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
	q := `SELECT ` + envoyCols + ` FROM envoys WHERE 1 = 1`
	var args []any
	if f.Status != "" {
		q += ` AND status = ?`
		args = append(args, f.Status)
	}
	if f.Hostname != "" {
		q += ` AND hostname = ?`
		args = append(args, f.Hostname)
	}
	if !f.ChangedSince.IsZero() {
		q += ` AND changed_at >= ? ORDER BY changed_at, uuid`
		args = append(args, f.ChangedSince.UnixMilli())
	} else {
		q += ` ORDER BY created_at, uuid`
	}
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	es, err := collectEnvoys(s.rdb.QueryContext(ctx, q, args...))
	if err != nil {
		return nil, fmt.Errorf("list envoys: %w", err)
	}
	return es, nil
}

// dialect is SQLite's, for the queries built by sqlq.
var dialect = sqlq.Dialect{
	Placeholder: func(int) string { return "?" },
	Time:        func(t time.Time) any { return t.UnixMilli() },
	// The store runs no ANALYZE: without statistics SQLite takes an
	// equality on an indexed column for a rare one.
	Common: func(cond string) string { return "likelihood(" + cond + ", 0.9)" },
}

// QueryEnvoys returns a page of the envoys matching q, in q's order.
func (s *Store) QueryEnvoys(ctx context.Context, q store.EnvoyQuery) ([]store.Envoy, error) {
	clauses, args, reversed := sqlq.Envoys(q, dialect)
	es, err := collectEnvoys(s.rdb.QueryContext(ctx, `SELECT `+envoyCols+` FROM envoys`+clauses, args...))
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
	if err := s.rdb.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count envoys: %w", err)
	}
	return n, nil
}

// RevokeEnvoys revokes the active envoys matched by rs. A Revocation with
// both UUID and Hostname set revokes the envoy with that UUID and the
// active envoy with that hostname; one with neither matches nothing.
func (s *Store) RevokeEnvoys(ctx context.Context, rs []store.Revocation) ([]store.Envoy, error) {
	var revoked []store.Envoy
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		revoked = nil
		for _, r := range rs {
			if r.UUID == "" && r.Hostname == "" {
				continue
			}
			at := s.orNow(r.At)
			es, err := collectEnvoys(tx.QueryContext(ctx, `UPDATE envoys
				SET status = 'revoked', revoked_at = ?, revoked_reason = ?, revoked_revision = ?, changed_at = ?
				WHERE status = 'active' AND ((? <> '' AND uuid = ?) OR (? <> '' AND hostname = ?))
				RETURNING `+envoyCols,
				at.UnixMilli(), r.Reason, r.Revision, s.now().UnixMilli(), r.UUID, r.UUID, r.Hostname, r.Hostname))
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
	err := q.QueryRowContext(ctx, `SELECT status FROM envoys WHERE uuid = ?`, uuid).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) {
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
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		res, err := tx.ExecContext(ctx, `UPDATE envoys SET rebootstrap = ?, update_version = ?, update_allow_downgrade = ?, changed_at = ? WHERE uuid = ? AND status = 'active'`,
			f.Rebootstrap, f.UpdateVersion, f.UpdateAllowDowngrade, s.now().UnixMilli(), uuid)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
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
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		var key any // NULL keeps the current key
		if p.PublicKey != nil {
			key = p.PublicKey
		}
		res, err := tx.ExecContext(ctx, `UPDATE envoys SET cert_serial = ?, cert_not_after = ?, public_key = COALESCE(?, public_key), changed_at = ?
			WHERE uuid = ? AND status = 'active' AND cert_serial = ?`,
			p.NewSerial, ms(p.NotAfter), key, s.now().UnixMilli(), p.UUID, p.OldSerial)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
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

// SeenNonce records a nonce until expires and reports whether it was
// already recorded.
func (s *Store) SeenNonce(ctx context.Context, envoyUUID string, nonce []byte, expires time.Time) (bool, error) {
	var seen bool
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		// Only this envoy's expired nonces: Prune sweeps the rest.
		if _, err := tx.ExecContext(ctx, `DELETE FROM nonces WHERE envoy_uuid = ? AND expires_at <= ?`, envoyUUID, s.now().UnixMilli()); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO nonces (envoy_uuid, nonce, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (envoy_uuid, nonce) DO NOTHING`, envoyUUID, nonce, expires.UnixMilli())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		seen = n == 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("record nonce of envoy %s: %w", envoyUUID, err)
	}
	return seen, nil
}

// ---- audit ----

func (s *Store) insertAudit(ctx context.Context, q querier, ev store.AuditEvent) error {
	var details any
	if len(ev.Details) > 0 {
		b, err := json.Marshal(ev.Details)
		if err != nil {
			return fmt.Errorf("encode audit details: %w", err)
		}
		details = string(b)
	}
	_, err := q.ExecContext(ctx, `INSERT INTO audit (at, type, result, hostname, source_ip, method, rule, revision,
		token_id, envoy_uuid, reason, replica, details, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.orNow(ev.At).UnixMilli(), ev.Type, ev.Result, ev.Hostname, ev.SourceIP, ev.Method, ev.Rule, ev.Revision,
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
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
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
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	evs, err := collectAudit(s.rdb.QueryContext(ctx, `SELECT `+auditCols+` FROM audit WHERE at >= ? ORDER BY at, id LIMIT ?`,
		since.UnixMilli(), limit))
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return evs, nil
}

// QueryAudit returns the events matching q, newest first.
func (s *Store) QueryAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEvent, error) {
	clauses, args := sqlq.Audit(q, dialect)
	evs, err := collectAudit(s.rdb.QueryContext(ctx, `SELECT `+auditCols+` FROM audit`+clauses, args...))
	if err != nil {
		return nil, fmt.Errorf("query audit: %w", err)
	}
	return evs, nil
}

// CountAudit counts events since a time by type, result, method and
// generalised reason.
func (s *Store) CountAudit(ctx context.Context, since time.Time, types ...string) ([]store.AuditCount, error) {
	query, args := sqlq.CountAudit(since, types, dialect)
	rows, err := s.rdb.QueryContext(ctx, query, args...)
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

func collectAudit(rows *sql.Rows, err error) ([]store.AuditEvent, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var evs []store.AuditEvent
	for rows.Next() {
		var ev store.AuditEvent
		var at sql.NullInt64
		var details sql.NullString
		if err := rows.Scan(&ev.ID, &at, &ev.Type, &ev.Result, &ev.Hostname, &ev.SourceIP, &ev.Method, &ev.Rule,
			&ev.Revision, &ev.TokenID, &ev.EnvoyUUID, &ev.Reason, &ev.Replica, &details, &ev.Actor); err != nil {
			return nil, err
		}
		ev.At = fromMS(at)
		if details.Valid && details.String != "" {
			if err := json.Unmarshal([]byte(details.String), &ev.Details); err != nil {
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
	err = s.write(ctx, func(ctx context.Context, tx *wtx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO policy_revision (singleton, id, source, files, spec, signer, applied_at)
			VALUES (1, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (singleton) DO UPDATE SET id = excluded.id, source = excluded.source, files = excluded.files,
				spec = excluded.spec, signer = excluded.signer, applied_at = excluded.applied_at`,
			r.ID, r.Source, string(files), nonNil(r.Spec), r.Signer, ms(r.AppliedAt))
		return err
	})
	if err != nil {
		return fmt.Errorf("save policy revision %s: %w", r.ID, err)
	}
	return nil
}

// LoadPolicyRevision returns the saved revision, or store.ErrNotFound.
func (s *Store) LoadPolicyRevision(ctx context.Context) (store.PolicyRevision, error) {
	var r store.PolicyRevision
	var files string
	var applied sql.NullInt64
	err := s.rdb.QueryRowContext(ctx, `SELECT id, source, files, spec, signer, applied_at FROM policy_revision WHERE singleton = 1`).
		Scan(&r.ID, &r.Source, &files, &r.Spec, &r.Signer, &applied)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.PolicyRevision{}, fmt.Errorf("load policy revision: %w", err)
	}
	if err := json.Unmarshal([]byte(files), &r.Files); err != nil {
		return store.PolicyRevision{}, fmt.Errorf("load policy revision %s: decode files: %w", r.ID, err)
	}
	r.AppliedAt = fromMS(applied)
	if len(r.Spec) == 0 {
		r.Spec = nil
	}
	return r, nil
}

// nonNil returns b, or an empty slice for nil (a NOT NULL blob).
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// SavePolicyRefusal remembers a refused revision of a replica.
func (s *Store) SavePolicyRefusal(ctx context.Context, r store.PolicyRefusal) error {
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO policy_refusals (replica, revision, kind, limits, errors, at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (replica, revision) DO UPDATE SET kind = excluded.kind, limits = excluded.limits,
				errors = excluded.errors, at = excluded.at`,
			r.Replica, r.Revision, r.Kind, r.Limits, r.Errors, r.At.UnixMilli()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM policy_refusals WHERE replica = ? AND revision NOT IN
			(SELECT revision FROM policy_refusals WHERE replica = ? ORDER BY at DESC, revision LIMIT ?)`,
			r.Replica, r.Replica, store.MaxPolicyRefusals)
		return err
	})
	if err != nil {
		return fmt.Errorf("save policy refusal %s: %w", r.Revision, err)
	}
	return nil
}

// ListPolicyRefusals returns the refusals of a replica, newest first.
func (s *Store) ListPolicyRefusals(ctx context.Context, replica string) ([]store.PolicyRefusal, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT replica, revision, kind, limits, errors, at FROM policy_refusals
		WHERE replica = ? ORDER BY at DESC, revision LIMIT ?`, replica, store.MaxPolicyRefusals)
	if err != nil {
		return nil, fmt.Errorf("list policy refusals: %w", err)
	}
	defer rows.Close()
	var out []store.PolicyRefusal
	for rows.Next() {
		var r store.PolicyRefusal
		var at int64
		if err := rows.Scan(&r.Replica, &r.Revision, &r.Kind, &r.Limits, &r.Errors, &at); err != nil {
			return nil, fmt.Errorf("list policy refusals: %w", err)
		}
		r.At = time.UnixMilli(at).UTC()
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
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		total = 0
		cut := before.UnixMilli()
		res, err := tx.ExecContext(ctx, `DELETE FROM audit WHERE at < ?`, cut)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		total += n
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO retired_envoys (uuid)
			SELECT uuid FROM envoys WHERE status = 'revoked' AND revoked_at < ?`, cut); err != nil {
			return err
		}
		res, err = tx.ExecContext(ctx, `DELETE FROM envoys WHERE status = 'revoked' AND revoked_at < ?`, cut)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		if err != nil {
			return err
		}
		total += n
		res, err = tx.ExecContext(ctx, `DELETE FROM nonces WHERE expires_at <= ?`, s.now().UnixMilli())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		total += n
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return total, nil
}

// ---- policy history and control ----

// SavePolicyHistory records an applied revision.
func (s *Store) SavePolicyHistory(ctx context.Context, h store.PolicyHistory) error {
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO policy_history (id, name, subject, author, signer, spec, applied_at, replica)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, subject = excluded.subject, author = excluded.author,
				signer = excluded.signer, spec = excluded.spec, applied_at = excluded.applied_at, replica = excluded.replica`,
			h.ID, h.Name, h.Subject, h.Author, h.Signer, nonNil(h.Spec), h.AppliedAt.UnixMilli(), h.Replica); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM policy_history WHERE id NOT IN
			(SELECT id FROM policy_history ORDER BY applied_at DESC, id LIMIT ?)`, store.MaxPolicyHistory)
		return err
	})
	if err != nil {
		return fmt.Errorf("save policy history %s: %w", h.ID, err)
	}
	return nil
}

const historyColumns = `id, name, subject, author, signer, spec, applied_at, replica`

func scanHistory(r interface{ Scan(...any) error }) (store.PolicyHistory, error) {
	var h store.PolicyHistory
	var at int64
	err := r.Scan(&h.ID, &h.Name, &h.Subject, &h.Author, &h.Signer, &h.Spec, &at, &h.Replica)
	h.AppliedAt = time.UnixMilli(at).UTC()
	return h, err
}

// ListPolicyHistory returns the applied revisions, newest first.
func (s *Store) ListPolicyHistory(ctx context.Context, limit int) ([]store.PolicyHistory, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+historyColumns+` FROM policy_history ORDER BY applied_at DESC, id LIMIT ?`, limit)
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
	h, err := scanHistory(s.rdb.QueryRowContext(ctx, `SELECT `+historyColumns+` FROM policy_history WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
	var suspendedAt, pinnedAt sql.NullInt64
	err := s.rdb.QueryRowContext(ctx, `SELECT suspended, suspend_reason, suspended_by, suspended_at, pinned, pin_reason, pinned_by, pinned_at
		FROM policy_control WHERE singleton = 1`).
		Scan(&c.Suspended, &c.SuspendReason, &c.SuspendedBy, &suspendedAt, &c.Pinned, &c.PinReason, &c.PinnedBy, &pinnedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return store.PolicyControl{}, nil
	}
	if err != nil {
		return store.PolicyControl{}, fmt.Errorf("get policy control: %w", err)
	}
	c.SuspendedAt, c.PinnedAt = fromMS(suspendedAt), fromMS(pinnedAt)
	return c, nil
}

// SetPolicyControl replaces the shared suspend and pin state and appends audit.
func (s *Store) SetPolicyControl(ctx context.Context, c store.PolicyControl, audit store.AuditEvent) error {
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO policy_control (singleton, suspended, suspend_reason, suspended_by, suspended_at,
				pinned, pin_reason, pinned_by, pinned_at)
			VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (singleton) DO UPDATE SET suspended = excluded.suspended, suspend_reason = excluded.suspend_reason,
				suspended_by = excluded.suspended_by, suspended_at = excluded.suspended_at, pinned = excluded.pinned,
				pin_reason = excluded.pin_reason, pinned_by = excluded.pinned_by, pinned_at = excluded.pinned_at`,
			c.Suspended, c.SuspendReason, c.SuspendedBy, ms(c.SuspendedAt), c.Pinned, c.PinReason, c.PinnedBy, ms(c.PinnedAt)); err != nil {
			return err
		}
		return s.insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("set policy control: %w", err)
	}
	return nil
}
