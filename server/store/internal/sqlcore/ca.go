package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/vigo-enroll/vigo/server/store"
)

// GetCAState returns the CA rotation state (the zero value when none was
// saved).
func (c *Core) GetCAState(ctx context.Context) (store.CAState, error) {
	var s store.CAState
	err := c.read.QueryRow(ctx, `SELECT phase, current_pem, next_pem, version, updated_at FROM ca_state WHERE singleton = 1`).
		Scan(&s.Phase, &s.Current, &s.Next, &s.Version, tm(&s.UpdatedAt))
	if errors.Is(err, sql.ErrNoRows) {
		return store.CAState{}, nil
	}
	if err != nil {
		return store.CAState{}, fmt.Errorf("get CA state: %w", err)
	}
	if len(s.Next) == 0 {
		s.Next = nil
	}
	return s, nil
}

// SetCAState replaces the CA rotation state if its version is still prev
// (0: none saved yet), and appends audit; store.ErrConflict otherwise.
func (c *Core) SetCAState(ctx context.Context, prev int64, s store.CAState, audit store.AuditEvent) error {
	s.UpdatedAt = c.orNow(s.UpdatedAt)
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		var n int64
		var err error
		if prev == 0 {
			n, err = tx.Exec(ctx, `INSERT INTO ca_state (singleton, phase, current_pem, next_pem, version, updated_at)
				VALUES (1, ?, ?, ?, 1, ?) ON CONFLICT (singleton) DO NOTHING`,
				s.Phase, nonNil(s.Current), nonNil(s.Next), c.time(s.UpdatedAt))
		} else {
			n, err = tx.Exec(ctx, `UPDATE ca_state SET phase = ?, current_pem = ?, next_pem = ?, version = version + 1, updated_at = ?
				WHERE singleton = 1 AND version = ?`,
				s.Phase, nonNil(s.Current), nonNil(s.Next), c.time(s.UpdatedAt), prev)
		}
		if err != nil {
			return err
		}
		if n != 1 {
			return store.ErrConflict
		}
		return c.InsertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("set CA state: %w", err)
	}
	return nil
}

// CountActiveEnvoysBySerialPrefix counts the active envoys whose
// certificate serial starts with prefix.
func (c *Core) CountActiveEnvoysBySerialPrefix(ctx context.Context, prefix string) (int, error) {
	if err := store.CheckSerialPrefix(prefix); err != nil {
		return 0, err
	}
	var n int
	err := c.read.QueryRow(ctx, `SELECT count(*) FROM envoys WHERE status = 'active' AND substr(cert_serial, 1, ?) = ?`,
		len(prefix), prefix).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count envoys by serial prefix: %w", err)
	}
	return n, nil
}
