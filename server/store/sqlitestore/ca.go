package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/vigo-enroll/vigo/server/store"
)

// GetCAState returns the CA rotation state.
func (s *Store) GetCAState(ctx context.Context) (store.CAState, error) {
	var c store.CAState
	var updated sql.NullInt64
	err := s.rdb.QueryRowContext(ctx, `SELECT phase, current_pem, next_pem, version, updated_at FROM ca_state WHERE singleton = 1`).
		Scan(&c.Phase, &c.Current, &c.Next, &c.Version, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return store.CAState{}, nil
	}
	if err != nil {
		return store.CAState{}, fmt.Errorf("get CA state: %w", err)
	}
	if len(c.Next) == 0 {
		c.Next = nil
	}
	c.UpdatedAt = fromMS(updated)
	return c, nil
}

// SetCAState replaces the CA rotation state if its version is still prev.
func (s *Store) SetCAState(ctx context.Context, prev int64, c store.CAState, audit store.AuditEvent) error {
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = s.now()
	}
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		var res sql.Result
		var err error
		if prev == 0 {
			res, err = tx.ExecContext(ctx, `INSERT INTO ca_state (singleton, phase, current_pem, next_pem, version, updated_at)
				VALUES (1, ?, ?, ?, 1, ?) ON CONFLICT (singleton) DO NOTHING`,
				c.Phase, nonNil(c.Current), nonNil(c.Next), ms(c.UpdatedAt))
		} else {
			res, err = tx.ExecContext(ctx, `UPDATE ca_state SET phase = ?, current_pem = ?, next_pem = ?, version = version + 1, updated_at = ?
				WHERE singleton = 1 AND version = ?`,
				c.Phase, nonNil(c.Current), nonNil(c.Next), ms(c.UpdatedAt), prev)
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			return store.ErrConflict
		}
		return s.insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("set CA state: %w", err)
	}
	return nil
}

// CountActiveEnvoysBySerialPrefix counts the active envoys whose
// certificate serial starts with prefix.
func (s *Store) CountActiveEnvoysBySerialPrefix(ctx context.Context, prefix string) (int, error) {
	if err := store.CheckSerialPrefix(prefix); err != nil {
		return 0, err
	}
	var n int
	err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FROM envoys WHERE status = 'active' AND substr(cert_serial, 1, ?) = ?`,
		len(prefix), prefix).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count envoys by serial prefix: %w", err)
	}
	return n, nil
}
