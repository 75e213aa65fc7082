package sqlcore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/internal/sqlq"
)

// InsertAudit appends ev in the transaction of q. An event with a zero At
// is stamped with the current time.
func (c *Core) InsertAudit(ctx context.Context, q Querier, ev store.AuditEvent) error {
	var details any // NULL when empty
	if len(ev.Details) > 0 {
		b, err := json.Marshal(ev.Details)
		if err != nil {
			return fmt.Errorf("encode audit details: %w", err)
		}
		details = string(b)
	}
	_, err := q.Exec(ctx, `INSERT INTO audit (at, type, result, hostname, source_ip, method, rule, revision,
		token_id, envoy_uuid, reason, replica, details, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.time(c.orNow(ev.At)), ev.Type, ev.Result, ev.Hostname, ev.SourceIP, ev.Method, ev.Rule, ev.Revision,
		ev.TokenID, ev.EnvoyUUID, ev.Reason, ev.Replica, details, ev.Actor)
	if err != nil {
		return fmt.Errorf("append audit %s: %w", ev.Type, err)
	}
	return nil
}

// AppendAudit appends events in one transaction. An event with a zero At
// is stamped with the current time.
func (c *Core) AppendAudit(ctx context.Context, evs ...store.AuditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	err := c.tx(ctx, func(ctx context.Context, tx Querier) error {
		for _, ev := range evs {
			if err := c.InsertAudit(ctx, tx, ev); err != nil {
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
func (c *Core) ListAudit(ctx context.Context, since time.Time, limit int) ([]store.AuditEvent, error) {
	query := `SELECT ` + AuditCols + ` FROM audit WHERE at >= ? ORDER BY at, id`
	args := []any{c.time(since)}
	if limit > 0 {
		query += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := c.read.Query(ctx, query, args...)
	evs, err := collect(rows, err, scanAudit)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return evs, nil
}

// QueryAudit returns the events matching q, newest first.
func (c *Core) QueryAudit(ctx context.Context, q store.AuditQuery) ([]store.AuditEvent, error) {
	clauses, args := sqlq.Audit(q, c.d.Dialect)
	rows, err := c.read.Query(ctx, `SELECT `+AuditCols+` FROM audit`+clauses, args...)
	evs, err := collect(rows, err, scanAudit)
	if err != nil {
		return nil, fmt.Errorf("query audit: %w", err)
	}
	return evs, nil
}

// CountAudit counts events since a time by type, result, method and
// generalised reason.
func (c *Core) CountAudit(ctx context.Context, since time.Time, types ...string) ([]store.AuditCount, error) {
	query, args := sqlq.CountAudit(since, types, c.d.Dialect)
	rows, err := c.read.Query(ctx, query, args...)
	out, err := collect(rows, err, func(r Row) (store.AuditCount, error) {
		var n store.AuditCount
		err := r.Scan(&n.Type, &n.Result, &n.Method, &n.Reason, &n.Count)
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("count audit: %w", err)
	}
	return out, nil
}

// AuditCols are the columns of an audit event, in the order scanAudit reads them.
const AuditCols = `id, at, type, result, hostname, source_ip, method, rule, revision, token_id, envoy_uuid, reason, replica, details, actor`

func scanAudit(r Row) (store.AuditEvent, error) {
	var ev store.AuditEvent
	var details sql.NullString
	if err := r.Scan(&ev.ID, tm(&ev.At), &ev.Type, &ev.Result, &ev.Hostname, &ev.SourceIP, &ev.Method, &ev.Rule,
		&ev.Revision, &ev.TokenID, &ev.EnvoyUUID, &ev.Reason, &ev.Replica, &details, &ev.Actor); err != nil {
		return store.AuditEvent{}, err
	}
	if details.Valid && details.String != "" {
		if err := json.Unmarshal([]byte(details.String), &ev.Details); err != nil {
			return store.AuditEvent{}, fmt.Errorf("decode details of event %d: %w", ev.ID, err)
		}
	}
	return ev, nil
}
