package sqlcore

import (
	"context"
	"fmt"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
)

// ---- tokens ----

const tokenCols = `id, secret_hash, pattern, note, created_at, expires_at, used_at, used_by, revoked_at`

func scanToken(sc Row) (store.Token, error) {
	var t store.Token
	err := sc.Scan(&t.ID, &t.SecretHash, &t.Pattern, &t.Note, tm(&t.CreatedAt), tm(&t.ExpiresAt), tm(&t.UsedAt), &t.UsedBy, tm(&t.RevokedAt))
	return t, err
}

// CreateToken stores a new token and appends audit in one transaction.
func (c *Core) CreateToken(ctx context.Context, t store.Token, audit store.AuditEvent) error {
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		_, err := tx.Exec(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			t.ID, nonNil(t.SecretHash), t.Pattern, t.Note, c.time(c.orNow(t.CreatedAt)), c.time(t.ExpiresAt),
			c.nullTime(t.UsedAt), t.UsedBy, c.nullTime(t.RevokedAt))
		if err != nil {
			return c.conflict(err)
		}
		return c.InsertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

// GetToken returns the token with this id, or store.ErrNotFound.
func (c *Core) GetToken(ctx context.Context, id string) (store.Token, error) {
	t, err := scanToken(c.read.QueryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = ?`, id))
	if err != nil {
		return store.Token{}, fmt.Errorf("get token %s: %w", id, noRows(err))
	}
	return t, nil
}

// ListTokens returns all tokens, newest first.
func (c *Core) ListTokens(ctx context.Context) ([]store.Token, error) {
	rows, err := c.read.Query(ctx, `SELECT `+tokenCols+` FROM tokens ORDER BY created_at DESC, id DESC`)
	ts, err := collect(rows, err, scanToken)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// RevokeToken marks an unused token revoked and appends audit.
func (c *Core) RevokeToken(ctx context.Context, id string, at time.Time, audit store.AuditEvent) error {
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		n, err := tx.Exec(ctx, `UPDATE tokens SET revoked_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL`,
			c.time(c.orNow(at)), id)
		if err != nil {
			return err
		}
		if n == 0 {
			var one int
			if err := tx.QueryRow(ctx, `SELECT 1 FROM tokens WHERE id = ?`, id).Scan(&one); err != nil {
				return noRows(err)
			}
			return store.ErrTokenUnavailable
		}
		return c.InsertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	return nil
}

// ---- admin tokens ----

const adminTokenCols = `id, name, role, secret_hash, created_at, revoked_at`

func scanAdminToken(sc Row) (store.AdminToken, error) {
	var t store.AdminToken
	err := sc.Scan(&t.ID, &t.Name, &t.Role, &t.SecretHash, tm(&t.CreatedAt), tm(&t.RevokedAt))
	return t, err
}

// CreateAdminToken stores a named admin token and appends audit in one
// transaction.
func (c *Core) CreateAdminToken(ctx context.Context, t store.AdminToken, audit store.AuditEvent) error {
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		_, err := tx.Exec(ctx, `INSERT INTO admin_tokens (`+adminTokenCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
			t.ID, t.Name, t.Role, nonNil(t.SecretHash), c.time(c.orNow(t.CreatedAt)), c.nullTime(t.RevokedAt))
		if err != nil {
			return c.conflict(err)
		}
		return c.InsertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("create admin token %q: %w", t.Name, err)
	}
	return nil
}

// GetAdminToken returns the admin token with this id, or store.ErrNotFound.
func (c *Core) GetAdminToken(ctx context.Context, id string) (store.AdminToken, error) {
	t, err := scanAdminToken(c.read.QueryRow(ctx, `SELECT `+adminTokenCols+` FROM admin_tokens WHERE id = ?`, id))
	if err != nil {
		return store.AdminToken{}, fmt.Errorf("get admin token %s: %w", id, noRows(err))
	}
	return t, nil
}

// ListAdminTokens returns all admin tokens, newest first.
func (c *Core) ListAdminTokens(ctx context.Context) ([]store.AdminToken, error) {
	rows, err := c.read.Query(ctx, `SELECT `+adminTokenCols+` FROM admin_tokens ORDER BY created_at DESC, id DESC`)
	ts, err := collect(rows, err, scanAdminToken)
	if err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	return ts, nil
}

// RevokeAdminToken revokes the active admin token named name and appends
// audit.
func (c *Core) RevokeAdminToken(ctx context.Context, name string, at time.Time, audit store.AuditEvent) (store.AdminToken, error) {
	var t store.AdminToken
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		var err error
		// The time comes back as stored, at the database's precision.
		t, err = scanAdminToken(tx.QueryRow(ctx, `UPDATE admin_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL
			RETURNING `+adminTokenCols, c.time(c.orNow(at).Truncate(time.Microsecond)), name))
		if err != nil {
			return noRows(err)
		}
		audit.TokenID = t.ID
		return c.InsertAudit(ctx, tx, audit)
	})
	if err != nil {
		return store.AdminToken{}, fmt.Errorf("revoke admin token %q: %w", name, err)
	}
	return t, nil
}
