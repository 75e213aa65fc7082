package sqlitestore

import (
	"context"
	"fmt"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlq"
)

// CountFleet counts the envoys by status and agent version in one pass.
func (s *Store) CountFleet(ctx context.Context, q store.FleetQuery) ([]store.FleetGroup, error) {
	query, args := sqlq.CountFleet(q, dialect)
	rows, err := s.rdb.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("count fleet: %w", err)
	}
	defer rows.Close()
	return sqlq.CollectFleet(rows, q)
}
