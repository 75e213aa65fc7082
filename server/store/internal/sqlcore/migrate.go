package sqlcore

import (
	"context"
	"fmt"
	"log/slog"
)

// MigrateParams is what Migrate needs.
type MigrateParams struct {
	// Migrations are the schema's changes in order: the first is version 1.
	Migrations []string
	// Create creates the table schema_migrations (version, applied_at)
	// when it does not exist.
	Create string
	// Lock, when set, runs first in each migration's transaction, to
	// serialise the processes that migrate one database.
	Lock string
	// Logger receives a line for each migration applied.
	Logger *slog.Logger
}

// Migrate applies the pending migrations, each in its own transaction. The
// applied versions are re-read inside the transaction, so that processes
// opening one database together apply each migration once.
func (c *Core) Migrate(ctx context.Context, p MigrateParams) error {
	for i, m := range p.Migrations {
		version := i + 1
		err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
			if p.Lock != "" {
				if _, err := tx.Exec(ctx, p.Lock); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, p.Create); err != nil {
				return fmt.Errorf("create schema_migrations: %w", err)
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.Exec(ctx, m); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, version, c.time(c.now())); err != nil {
				return err
			}
			p.Logger.Info("applied schema migration", "version", version)
			return nil
		})
		if err != nil {
			return fmt.Errorf("apply migration %d: %w", version, err)
		}
	}
	return nil
}
