package sqlcore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
)

// ---- policy revision ----

// SavePolicyRevision replaces the saved policy revision.
func (c *Core) SavePolicyRevision(ctx context.Context, r store.PolicyRevision) error {
	files, err := json.Marshal(r.Files) // []byte contents become base64
	if err != nil {
		return fmt.Errorf("save policy revision %s: encode files: %w", r.ID, err)
	}
	err = c.tx(ctx, func(ctx context.Context, tx Querier) error {
		_, err := tx.Exec(ctx, `INSERT INTO policy_revision (singleton, id, source, files, spec, signer, applied_at)
			VALUES (1, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (singleton) DO UPDATE SET id = excluded.id, source = excluded.source, files = excluded.files,
				spec = excluded.spec, signer = excluded.signer, applied_at = excluded.applied_at`,
			r.ID, r.Source, c.d.JSON(files), nonNil(r.Spec), r.Signer, c.nullTime(r.AppliedAt))
		return err
	})
	if err != nil {
		return fmt.Errorf("save policy revision %s: %w", r.ID, err)
	}
	return nil
}

// LoadPolicyRevision returns the saved revision, or store.ErrNotFound.
func (c *Core) LoadPolicyRevision(ctx context.Context) (store.PolicyRevision, error) {
	var r store.PolicyRevision
	var files []byte
	err := c.read.QueryRow(ctx, `SELECT id, source, files, spec, signer, applied_at FROM policy_revision WHERE singleton = 1`).
		Scan(&r.ID, &r.Source, &files, &r.Spec, &r.Signer, tm(&r.AppliedAt))
	if err != nil {
		return store.PolicyRevision{}, fmt.Errorf("load policy revision: %w", noRows(err))
	}
	if err := json.Unmarshal(files, &r.Files); err != nil {
		return store.PolicyRevision{}, fmt.Errorf("load policy revision %s: decode files: %w", r.ID, err)
	}
	if len(r.Spec) == 0 {
		r.Spec = nil
	}
	return r, nil
}

// SavePolicyRefusal remembers a refused revision of a replica.
func (c *Core) SavePolicyRefusal(ctx context.Context, r store.PolicyRefusal) error {
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		if _, err := tx.Exec(ctx, `INSERT INTO policy_refusals (replica, revision, kind, limits, errors, at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (replica, revision) DO UPDATE SET kind = excluded.kind, limits = excluded.limits,
				errors = excluded.errors, at = excluded.at`,
			r.Replica, r.Revision, r.Kind, r.Limits, r.Errors, c.time(r.At)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM policy_refusals WHERE replica = ? AND revision NOT IN
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
func (c *Core) ListPolicyRefusals(ctx context.Context, replica string) ([]store.PolicyRefusal, error) {
	rows, err := c.read.Query(ctx, `SELECT replica, revision, kind, limits, errors, at FROM policy_refusals
		WHERE replica = ? ORDER BY at DESC, revision LIMIT ?`, replica, store.MaxPolicyRefusals)
	out, err := collect(rows, err, func(sc Row) (store.PolicyRefusal, error) {
		var r store.PolicyRefusal
		err := sc.Scan(&r.Replica, &r.Revision, &r.Kind, &r.Limits, &r.Errors, tm(&r.At))
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list policy refusals: %w", err)
	}
	return out, nil
}

// ---- policy history and control ----

// SavePolicyHistory records an applied revision.
func (c *Core) SavePolicyHistory(ctx context.Context, h store.PolicyHistory) error {
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		if _, err := tx.Exec(ctx, `INSERT INTO policy_history (id, name, subject, author, signer, spec, applied_at, replica)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, subject = excluded.subject, author = excluded.author,
				signer = excluded.signer, spec = excluded.spec, applied_at = excluded.applied_at, replica = excluded.replica`,
			h.ID, h.Name, h.Subject, h.Author, h.Signer, nonNil(h.Spec), c.time(h.AppliedAt), h.Replica); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM policy_history WHERE id NOT IN
			(SELECT id FROM policy_history ORDER BY applied_at DESC, id LIMIT ?)`, store.MaxPolicyHistory)
		return err
	})
	if err != nil {
		return fmt.Errorf("save policy history %s: %w", h.ID, err)
	}
	return nil
}

const historyCols = `id, name, subject, author, signer, spec, applied_at, replica`

func scanHistory(r Row) (store.PolicyHistory, error) {
	var h store.PolicyHistory
	err := r.Scan(&h.ID, &h.Name, &h.Subject, &h.Author, &h.Signer, &h.Spec, tm(&h.AppliedAt), &h.Replica)
	return h, err
}

// ListPolicyHistory returns the applied revisions, newest first, at most
// limit (0: all, which SavePolicyHistory keeps to store.MaxPolicyHistory).
func (c *Core) ListPolicyHistory(ctx context.Context, limit int) ([]store.PolicyHistory, error) {
	if limit <= 0 {
		limit = store.MaxPolicyHistory
	}
	rows, err := c.read.Query(ctx, `SELECT `+historyCols+` FROM policy_history ORDER BY applied_at DESC, id LIMIT ?`, limit)
	out, err := collect(rows, err, scanHistory)
	if err != nil {
		return nil, fmt.Errorf("list policy history: %w", err)
	}
	return out, nil
}

// GetPolicyHistory returns the record of an applied revision.
func (c *Core) GetPolicyHistory(ctx context.Context, id string) (store.PolicyHistory, error) {
	h, err := scanHistory(c.read.QueryRow(ctx, `SELECT `+historyCols+` FROM policy_history WHERE id = ?`, id))
	if err != nil {
		return store.PolicyHistory{}, fmt.Errorf("get policy history %s: %w", id, noRows(err))
	}
	return h, nil
}

// GetPolicyControl returns the shared suspend and pin state.
func (c *Core) GetPolicyControl(ctx context.Context) (store.PolicyControl, error) {
	var pc store.PolicyControl
	err := c.read.QueryRow(ctx, `SELECT suspended, suspend_reason, suspended_by, suspended_at, pinned, pin_reason, pinned_by, pinned_at
		FROM policy_control WHERE singleton = 1`).
		Scan(&pc.Suspended, &pc.SuspendReason, &pc.SuspendedBy, tm(&pc.SuspendedAt), &pc.Pinned, &pc.PinReason, &pc.PinnedBy, tm(&pc.PinnedAt))
	if errors.Is(err, sql.ErrNoRows) {
		return store.PolicyControl{}, nil
	}
	if err != nil {
		return store.PolicyControl{}, fmt.Errorf("get policy control: %w", err)
	}
	return pc, nil
}

// SetPolicyControl replaces the shared suspend and pin state and appends audit.
func (c *Core) SetPolicyControl(ctx context.Context, pc store.PolicyControl, audit store.AuditEvent) error {
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		if _, err := tx.Exec(ctx, `INSERT INTO policy_control (singleton, suspended, suspend_reason, suspended_by, suspended_at,
				pinned, pin_reason, pinned_by, pinned_at)
			VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (singleton) DO UPDATE SET suspended = excluded.suspended, suspend_reason = excluded.suspend_reason,
				suspended_by = excluded.suspended_by, suspended_at = excluded.suspended_at, pinned = excluded.pinned,
				pin_reason = excluded.pin_reason, pinned_by = excluded.pinned_by, pinned_at = excluded.pinned_at`,
			pc.Suspended, pc.SuspendReason, pc.SuspendedBy, c.nullTime(pc.SuspendedAt), pc.Pinned, pc.PinReason, pc.PinnedBy, c.nullTime(pc.PinnedAt)); err != nil {
			return err
		}
		return c.InsertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("set policy control: %w", err)
	}
	return nil
}

// ---- maintenance ----

// Prune deletes audit events older than before, envoys revoked before
// before and expired nonces. The UUIDs of deleted envoys are kept so they
// are never reused.
func (c *Core) Prune(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		total = 0
		cut := c.time(before)
		n, err := tx.Exec(ctx, `DELETE FROM audit WHERE at < ?`, cut)
		if err != nil {
			return err
		}
		total += n
		if _, err := tx.Exec(ctx, `INSERT INTO retired_envoys (uuid)
			SELECT uuid FROM envoys WHERE status = 'revoked' AND revoked_at < ?
			ON CONFLICT DO NOTHING`, cut); err != nil {
			return err
		}
		if n, err = tx.Exec(ctx, `DELETE FROM envoys WHERE status = 'revoked' AND revoked_at < ?`, cut); err != nil {
			return err
		}
		total += n
		n, err = tx.Exec(ctx, `DELETE FROM nonces WHERE expires_at <= ?`, c.time(c.now()))
		total += n
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return total, nil
}
