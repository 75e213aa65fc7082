package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigo-enroll/vigo/server/store"
)

// GetCAState returns the CA rotation state.
func (s *Store) GetCAState(ctx context.Context) (store.CAState, error) {
	var c store.CAState
	var updated *time.Time
	err := s.pool.QueryRow(ctx, `SELECT phase, current_pem, next_pem, version, updated_at FROM ca_state WHERE singleton = 1`).
		Scan(&c.Phase, &c.Current, &c.Next, &c.Version, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.CAState{}, nil
	}
	if err != nil {
		return store.CAState{}, fmt.Errorf("get CA state: %w", err)
	}
	if len(c.Next) == 0 {
		c.Next = nil
	}
	c.UpdatedAt = fromTS(updated)
	return c, nil
}

// SetCAState replaces the CA rotation state if its version is still prev.
func (s *Store) SetCAState(ctx context.Context, prev int64, c store.CAState, audit store.AuditEvent) error {
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = time.Now()
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var n int64
		if prev == 0 {
			tag, err := tx.Exec(ctx, `INSERT INTO ca_state (singleton, phase, current_pem, next_pem, version, updated_at)
				VALUES (1, $1, $2, $3, 1, $4) ON CONFLICT (singleton) DO NOTHING`,
				c.Phase, orEmpty(c.Current), orEmpty(c.Next), ts(c.UpdatedAt))
			if err != nil {
				return err
			}
			n = tag.RowsAffected()
		} else {
			tag, err := tx.Exec(ctx, `UPDATE ca_state SET phase = $1, current_pem = $2, next_pem = $3, version = version + 1, updated_at = $4
				WHERE singleton = 1 AND version = $5`,
				c.Phase, orEmpty(c.Current), orEmpty(c.Next), ts(c.UpdatedAt), prev)
			if err != nil {
				return err
			}
			n = tag.RowsAffected()
		}
		if n != 1 {
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
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM envoys WHERE status = 'active' AND substr(cert_serial, 1, $1) = $2`,
		len(prefix), prefix).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count envoys by serial prefix: %w", err)
	}
	return n, nil
}

// orEmpty turns nil into an empty slice: a NOT NULL bytea column.
func orEmpty(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
