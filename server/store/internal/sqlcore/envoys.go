package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlq"
)

// EnvoyCols are the columns of an envoy, in the order scanEnvoy reads them.
const EnvoyCols = `uuid, hostname, public_key, cert_serial, cert_not_after, os, arch, source_ip, method, rule,
	policy_revision, token_id, created_at, status, revoked_at, revoked_reason, revoked_revision, replaced_by,
	last_seen, agent_version, last_addr, rebootstrap, update_version, last_checkin_signed, update_allow_downgrade`

func scanEnvoy(sc Row) (store.Envoy, error) {
	var e store.Envoy
	err := sc.Scan(&e.UUID, &e.Hostname, &e.PublicKey, &e.CertSerial, tm(&e.CertNotAfter), &e.OS, &e.Arch, &e.SourceIP,
		&e.Method, &e.Rule, &e.PolicyRevision, &e.TokenID, tm(&e.CreatedAt), &e.Status, tm(&e.RevokedAt), &e.RevokedReason,
		&e.RevokedRevision, &e.ReplacedBy, tm(&e.LastSeen), &e.AgentVersion, &e.LastAddr, &e.Rebootstrap, &e.UpdateVersion,
		tm(&e.LastCheckinSigned), &e.UpdateAllowDowngrade)
	return e, err
}

func collectEnvoys(rows Rows, err error) ([]store.Envoy, error) {
	return collect(rows, err, scanEnvoy)
}

// maxAttempts bounds the attempts of an enrollment that lost a race.
const maxAttempts = 5

// errRaceLost marks a forced enrollment that lost a race on the active
// hostname index; the transaction is retried.
var errRaceLost = errors.New("lost a race for the hostname")

// Enroll creates an envoy, consuming a token and replacing an active envoy
// with the same hostname when asked, in one transaction.
func (c *Core) Enroll(ctx context.Context, p store.EnrollParams) ([]store.Envoy, error) {
	now := c.orNow(p.Now)
	e := p.Envoy
	e.Status = store.StatusActive
	e.CreatedAt = c.orNow(e.CreatedAt)
	e.PublicKey = nonNil(e.PublicKey)
	var replaced []store.Envoy
	enroll := func(ctx context.Context, tx Querier) error {
		replaced = nil
		if c.d.LockHostname != nil {
			if err := c.d.LockHostname(ctx, tx, e.Hostname); err != nil {
				return fmt.Errorf("lock hostname %s: %w", e.Hostname, err)
			}
		}
		if p.TokenID != "" {
			// Conditional consume: of concurrent uses of one token, exactly
			// one updates the row (the others wait for its lock, then find
			// it used).
			n, err := tx.Exec(ctx, `UPDATE tokens SET used_at = ?, used_by = ?
				WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?`,
				c.time(now), e.UUID, p.TokenID, c.time(now))
			if err != nil {
				return fmt.Errorf("consume token %s: %w", p.TokenID, err)
			}
			if n == 0 {
				return fmt.Errorf("consume token %s: %w", p.TokenID, store.ErrTokenUnavailable)
			}
		}
		if p.Force {
			var err error
			replaced, err = collectEnvoys(tx.Query(ctx, `UPDATE envoys
				SET status = 'revoked', revoked_at = ?, revoked_reason = ?, replaced_by = ?, changed_at = ?
				WHERE hostname = ? AND status = 'active' RETURNING `+EnvoyCols,
				c.time(now), p.ReplacedReason(), e.UUID, c.time(c.now()), e.Hostname))
			if err != nil {
				return fmt.Errorf("replace envoy %s: %w", e.Hostname, err)
			}
			for _, old := range replaced {
				if err := c.InsertAudit(ctx, tx, store.ReplacedEvent(old, e.UUID, p.ReplacedReason(), now, p.Audit)); err != nil {
					return err
				}
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO envoys (`+EnvoyCols+`, changed_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			e.UUID, e.Hostname, e.PublicKey, e.CertSerial, c.nullTime(e.CertNotAfter), e.OS, e.Arch, e.SourceIP, e.Method, e.Rule,
			e.PolicyRevision, e.TokenID, c.time(e.CreatedAt), e.Status, c.nullTime(e.RevokedAt), e.RevokedReason,
			e.RevokedRevision, e.ReplacedBy, c.nullTime(e.LastSeen), e.AgentVersion, e.LastAddr, e.Rebootstrap, e.UpdateVersion,
			c.nullTime(e.LastCheckinSigned), e.UpdateAllowDowngrade, c.time(c.now()))
		switch {
		case err == nil:
			return c.InsertAudit(ctx, tx, p.Audit)
		case c.d.HostnameTaken(err) && p.Force:
			// Another writer committed an active envoy for this hostname
			// after our UPDATE looked (one that does not take the hostname
			// lock, e.g. an older version): start again, and this time
			// replace it.
			return errRaceLost
		case c.d.HostnameTaken(err):
			return fmt.Errorf("insert envoy %s: %w", e.Hostname, store.ErrHostnameTaken)
		case c.d.Conflict(err):
			return fmt.Errorf("insert envoy: uuid %s already used: %w", e.UUID, store.ErrConflict)
		}
		return fmt.Errorf("insert envoy: %w", err)
	}
	var err error
	for range maxAttempts {
		if err = c.tx(ctx, enroll); !errors.Is(err, errRaceLost) {
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
func (c *Core) GetEnvoy(ctx context.Context, uuid string) (store.Envoy, error) {
	e, err := scanEnvoy(c.read.QueryRow(ctx, `SELECT `+EnvoyCols+` FROM envoys WHERE uuid = ?`, uuid))
	if err != nil {
		return store.Envoy{}, fmt.Errorf("get envoy %s: %w", uuid, noRows(err))
	}
	return e, nil
}

// GetActiveEnvoyByHostname returns the active envoy with this hostname, or
// store.ErrNotFound.
func (c *Core) GetActiveEnvoyByHostname(ctx context.Context, hostname string) (store.Envoy, error) {
	e, err := scanEnvoy(c.read.QueryRow(ctx, `SELECT `+EnvoyCols+` FROM envoys WHERE hostname = ? AND status = 'active'`, hostname))
	if err != nil {
		return store.Envoy{}, fmt.Errorf("get active envoy %s: %w", hostname, noRows(err))
	}
	return e, nil
}

// ListEnvoys returns envoys matching f, ordered by created_at then uuid
// (by changed_at then uuid with f.ChangedSince).
func (c *Core) ListEnvoys(ctx context.Context, f store.EnvoyFilter) ([]store.Envoy, error) {
	q := `SELECT ` + EnvoyCols + ` FROM envoys WHERE 1 = 1`
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
		args = append(args, c.time(f.ChangedSince))
	} else {
		q += ` ORDER BY created_at, uuid`
	}
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	es, err := collectEnvoys(c.read.Query(ctx, q, args...))
	if err != nil {
		return nil, fmt.Errorf("list envoys: %w", err)
	}
	return es, nil
}

// QueryEnvoys returns a page of the envoys matching q, in q's order.
func (c *Core) QueryEnvoys(ctx context.Context, q store.EnvoyQuery) ([]store.Envoy, error) {
	clauses, args, reversed := sqlq.Envoys(q, c.d.Dialect)
	es, err := collectEnvoys(c.read.Query(ctx, `SELECT `+EnvoyCols+` FROM envoys`+clauses, args...))
	if err != nil {
		return nil, fmt.Errorf("query envoys: %w", err)
	}
	if reversed {
		slices.Reverse(es)
	}
	return es, nil
}

// CountEnvoys counts the envoys matching q's filters, at most q.Limit.
func (c *Core) CountEnvoys(ctx context.Context, q store.EnvoyQuery) (int, error) {
	query, args := sqlq.CountEnvoys(q, c.d.Dialect)
	var n int
	if err := c.read.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count envoys: %w", err)
	}
	return n, nil
}

// RevokeEnvoys revokes the active envoys matched by rs. A Revocation with
// both UUID and Hostname set revokes the envoy with that UUID and the
// active envoy with that hostname; one with neither matches nothing.
func (c *Core) RevokeEnvoys(ctx context.Context, rs []store.Revocation) ([]store.Envoy, error) {
	var revoked []store.Envoy
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		revoked = nil
		for _, r := range rs {
			if r.UUID == "" && r.Hostname == "" {
				continue
			}
			at := c.orNow(r.At)
			es, err := collectEnvoys(tx.Query(ctx, `UPDATE envoys
				SET status = 'revoked', revoked_at = ?, revoked_reason = ?, revoked_revision = ?, changed_at = ?
				WHERE status = 'active' AND ((CAST(? AS TEXT) <> '' AND uuid = ?) OR (CAST(? AS TEXT) <> '' AND hostname = ?))
				RETURNING `+EnvoyCols,
				c.time(at), r.Reason, r.Revision, c.time(c.now()), r.UUID, r.UUID, r.Hostname, r.Hostname))
			if err != nil {
				return err
			}
			for _, e := range es {
				if err := c.InsertAudit(ctx, tx, store.RevokedEvent(e, r, at)); err != nil {
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
func activeOrWhy(ctx context.Context, q Querier, uuid string) error {
	var status string
	if err := q.QueryRow(ctx, `SELECT status FROM envoys WHERE uuid = ?`, uuid).Scan(&status); err != nil {
		return noRows(err)
	}
	if status != store.StatusActive {
		return store.ErrEnvoyRevoked
	}
	return nil
}

// SetEnvoyFlags sets the pending actions of an active envoy and appends audit.
func (c *Core) SetEnvoyFlags(ctx context.Context, uuid string, f store.EnvoyFlags, audit store.AuditEvent) error {
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		n, err := tx.Exec(ctx, `UPDATE envoys SET rebootstrap = ?, update_version = ?, update_allow_downgrade = ?, changed_at = ? WHERE uuid = ? AND status = 'active'`,
			f.Rebootstrap, f.UpdateVersion, f.UpdateAllowDowngrade, c.time(c.now()), uuid)
		if err != nil {
			return err
		}
		if n == 0 {
			if err := activeOrWhy(ctx, tx, uuid); err != nil {
				return err
			}
			return store.ErrConflict
		}
		return c.InsertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("set flags of envoy %s: %w", uuid, err)
	}
	return nil
}

// RenewCertificate records a new certificate for an active envoy whose
// current serial is p.OldSerial.
func (c *Core) RenewCertificate(ctx context.Context, p store.RenewParams) error {
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		var key any // NULL keeps the current key
		if p.PublicKey != nil {
			key = p.PublicKey
		}
		n, err := tx.Exec(ctx, `UPDATE envoys SET cert_serial = ?, cert_not_after = ?, public_key = COALESCE(?, public_key), changed_at = ?
			WHERE uuid = ? AND status = 'active' AND cert_serial = ?`,
			p.NewSerial, c.nullTime(p.NotAfter), key, c.time(c.now()), p.UUID, p.OldSerial)
		if err != nil {
			return err
		}
		if n == 0 {
			if err := activeOrWhy(ctx, tx, p.UUID); err != nil {
				return err
			}
			return store.ErrConflict // the serial changed meanwhile
		}
		return c.InsertAudit(ctx, tx, p.Audit)
	})
	if err != nil {
		return fmt.Errorf("renew certificate of envoy %s: %w", p.UUID, err)
	}
	return nil
}

// SeenNonce records a nonce until expires and reports whether it was
// already recorded. Of concurrent inserts of one key, the later ones wait
// for the first to commit and then do nothing.
func (c *Core) SeenNonce(ctx context.Context, envoyUUID string, nonce []byte, expires time.Time) (bool, error) {
	var seen bool
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		if c.d.NoncePrelude != "" {
			if _, err := tx.Exec(ctx, c.d.NoncePrelude); err != nil {
				return err
			}
		}
		// Only this envoy's expired nonces: Prune sweeps the rest.
		if _, err := tx.Exec(ctx, `DELETE FROM nonces WHERE envoy_uuid = ? AND expires_at <= ?`, envoyUUID, c.time(c.now())); err != nil {
			return err
		}
		n, err := tx.Exec(ctx, `INSERT INTO nonces (envoy_uuid, nonce, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (envoy_uuid, nonce) DO NOTHING`, envoyUUID, nonce, c.time(expires))
		seen = n == 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("record nonce of envoy %s: %w", envoyUUID, err)
	}
	return seen, nil
}

// CountFleet counts the envoys by status and agent version in one pass.
func (c *Core) CountFleet(ctx context.Context, q store.FleetQuery) ([]store.FleetGroup, error) {
	query, args := sqlq.CountFleet(q, c.d.Dialect)
	rows, err := c.read.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("count fleet: %w", err)
	}
	defer rows.Close()
	return sqlq.CollectFleet(rows, q)
}
