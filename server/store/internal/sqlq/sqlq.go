// Package sqlq builds the SQL of the store queries that both backends
// (SQLite and PostgreSQL) share: the filters, orders and keyset cursors of
// store.EnvoyQuery and store.AuditQuery. One copy of each query's meaning,
// so that the backends cannot drift apart; a backend brings its dialect
// (placeholders, how a time is stored).
package sqlq

import (
	"fmt"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
)

// Dialect is what differs between the backends.
type Dialect struct {
	// Placeholder returns the placeholder of the n-th argument (from 1):
	// "?" for SQLite, "$n" for PostgreSQL.
	Placeholder func(n int) string
	// Time converts a time to the stored form of a time column.
	Time func(time.Time) any
	// Common marks a condition that most rows meet (such as a status),
	// for a planner without statistics; nil leaves it as it is.
	Common func(cond string) string
}

// builder collects a WHERE clause and its arguments.
type builder struct {
	d     Dialect
	conds []string
	args  []any
}

// arg adds an argument and returns its placeholder.
func (b *builder) arg(v any) string {
	b.args = append(b.args, v)
	return b.d.Placeholder(len(b.args))
}

func (b *builder) add(format string, vs ...any) {
	ps := make([]any, len(vs))
	for i, v := range vs {
		ps[i] = b.arg(v)
	}
	b.conds = append(b.conds, fmt.Sprintf(format, ps...))
}

func (b *builder) where() string {
	if len(b.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(b.conds, " AND ")
}

// seenExpr is an envoy's Seen time (store.Envoy.Seen).
const seenExpr = "COALESCE(last_seen, created_at)"

// likeEscape escapes the LIKE wildcards of s ('\' is the escape character).
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

func (b *builder) envoyFilters(q store.EnvoyQuery) {
	common := func(cond string) string { return cond }
	if b.d.Common != nil {
		common = b.d.Common
	}
	// A status is common (most envoys are active): with "not seen
	// since", the index of the last check-in must win over the status's.
	if q.Status != "" {
		b.add(common("status = %s"), q.Status)
	}
	for _, f := range []struct{ col, v string }{
		{"method", q.Method}, {"rule", q.Rule},
		{"policy_revision", q.PolicyRevision}, {"agent_version", q.AgentVersion},
	} {
		if f.v != "" {
			b.add(f.col+" = %s", f.v)
		}
	}
	if q.Search != "" {
		b.add(`hostname LIKE %s ESCAPE '\'`, "%"+likeEscape(q.Search)+"%")
	}
	if !q.SeenBefore.IsZero() {
		b.add(seenExpr+" < %s", b.d.Time(q.SeenBefore))
	}
}

// Envoys returns the WHERE, ORDER BY and LIMIT clauses of q, its
// arguments, and whether the rows come in reverse order (a page before a
// cursor is read backwards from it: the caller reverses the rows).
func Envoys(q store.EnvoyQuery, d Dialect) (clauses string, args []any, reversed bool) {
	b := &builder{d: d}
	b.envoyFilters(q)
	key := "hostname"
	var keyArg func(c *store.EnvoyCursor) any = func(c *store.EnvoyCursor) any { return c.Hostname }
	switch q.Sort {
	case store.SortCreated:
		key, keyArg = "created_at", func(c *store.EnvoyCursor) any { return d.Time(c.Time) }
	case store.SortSeen:
		key, keyArg = seenExpr, func(c *store.EnvoyCursor) any { return d.Time(c.Time) }
	}
	desc := q.Desc
	cur := q.After
	if q.Before != nil {
		cur, desc, reversed = q.Before, !desc, true
	}
	op, dir := ">", "ASC"
	if desc {
		op, dir = "<", "DESC"
	}
	if cur != nil {
		// A row value comparison: both databases use the index on
		// (key, uuid) for it.
		b.add("("+key+", uuid) "+op+" (%s, %s)", keyArg(cur), cur.UUID)
	}
	clauses = b.where() + " ORDER BY " + key + " " + dir + ", uuid " + dir
	if q.Limit > 0 {
		clauses += " LIMIT " + b.arg(q.Limit)
	}
	return clauses, b.args, reversed
}

// CountEnvoys returns the query that counts the envoys matching q's
// filters, at most q.Limit of them when it is set, and its arguments.
func CountEnvoys(q store.EnvoyQuery, d Dialect) (string, []any) {
	b := &builder{d: d}
	b.envoyFilters(q)
	if q.Limit > 0 {
		// Counting stops at the limit: a common filter costs what a page does.
		return `SELECT count(*) FROM (SELECT 1 FROM envoys` + b.where() + ` LIMIT ` + b.arg(q.Limit) + `) AS matched`, b.args
	}
	return `SELECT count(*) FROM envoys` + b.where(), b.args
}

// Audit returns the WHERE, ORDER BY and LIMIT clauses of q and its
// arguments; rows come newest first.
func Audit(q store.AuditQuery, d Dialect) (string, []any) {
	b := &builder{d: d}
	if len(q.Types) > 0 {
		ps := make([]string, len(q.Types))
		for i, t := range q.Types {
			ps[i] = b.arg(t)
		}
		b.conds = append(b.conds, "type IN ("+strings.Join(ps, ", ")+")")
	}
	for _, f := range []struct{ col, v string }{{"result", q.Result}, {"hostname", q.Hostname}, {"envoy_uuid", q.EnvoyUUID}, {"actor", q.Actor}} {
		if f.v != "" {
			b.add(f.col+" = %s", f.v)
		}
	}
	if !q.Since.IsZero() {
		b.add("at >= %s", d.Time(q.Since))
	}
	if !q.Until.IsZero() {
		b.add("at < %s", d.Time(q.Until))
	}
	if c := q.Before; c != nil {
		b.add("(at, id) < (%s, %s)", d.Time(c.At), c.ID)
	}
	if c := q.After; c != nil {
		b.add("(at, id) > (%s, %s)", d.Time(c.At), c.ID)
	}
	clauses := b.where() + " ORDER BY at DESC, id DESC"
	if q.Limit > 0 {
		clauses += " LIMIT " + b.arg(q.Limit)
	}
	return clauses, b.args
}

// CountAudit returns the query of store.Store.CountAudit and its
// arguments. Its columns are type, result, method, the generalised reason
// and the count.
func CountAudit(since time.Time, types []string, d Dialect) (string, []any) {
	b := &builder{d: d}
	b.add("at >= %s", d.Time(since))
	if len(types) > 0 {
		ps := make([]string, len(types))
		for i, t := range types {
			ps[i] = b.arg(t)
		}
		b.conds = append(b.conds, "type IN ("+strings.Join(ps, ", ")+")")
	}
	// replace(x, '', y) is x in both databases: an event without a
	// hostname, address or token keeps its reason.
	const reason = `replace(replace(replace(reason, hostname, '<host>'), source_ip, '<addr>'), token_id, '<token>')`
	return `SELECT type, result, method, ` + reason + ` AS general, count(*) AS n FROM audit` + b.where() +
		` GROUP BY type, result, method, general ORDER BY n DESC, type, result, method, general`, b.args
}

// CountFleet returns the query of store.Store.CountFleet and its
// arguments. Its columns are status, agent_version, the count, the stale
// count, then one count per q.CertEndsBefore.
func CountFleet(q store.FleetQuery, d Dialect) (string, []any) {
	b := &builder{d: d}
	cols := []string{"status", "agent_version", "count(*)",
		"coalesce(sum(CASE WHEN " + seenExpr + " < " + b.arg(d.Time(q.SeenBefore)) + " THEN 1 ELSE 0 END), 0)"}
	for _, t := range q.CertEndsBefore {
		cols = append(cols, "coalesce(sum(CASE WHEN cert_not_after < "+b.arg(d.Time(t))+" THEN 1 ELSE 0 END), 0)")
	}
	return "SELECT " + strings.Join(cols, ", ") + " FROM envoys GROUP BY status, agent_version ORDER BY status, agent_version", b.args
}

// Rows are the rows of a query, of database/sql or pgx.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// CollectFleet reads the rows of the CountFleet query of q (the caller
// closes them).
func CollectFleet(rows Rows, q store.FleetQuery) ([]store.FleetGroup, error) {
	var gs []store.FleetGroup
	for rows.Next() {
		var g store.FleetGroup
		var n, stale int64
		ending := make([]int64, len(q.CertEndsBefore))
		dest := []any{&g.Status, &g.AgentVersion, &n, &stale}
		for i := range ending {
			dest = append(dest, &ending[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("count fleet: %w", err)
		}
		g.Envoys, g.Stale = int(n), int(stale)
		g.CertEnding = make([]int, len(ending))
		for i, v := range ending {
			g.CertEnding[i] = int(v)
		}
		gs = append(gs, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count fleet: %w", err)
	}
	return gs, nil
}
