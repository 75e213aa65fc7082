package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vigo-enroll/vigo/server/store"
)

// browseFleet enrolls 12 envoys with varied fields, revokes two and
// records check-ins for some, and returns them as stored.
func browseFleet(t *testing.T, s store.Store) []store.Envoy {
	t.Helper()
	ctx := t.Context()
	methods := []string{"approved", "trusted", "token"}
	for i := range 12 {
		// Hostnames out of creation order; two envoys share a creation time.
		e := newEnvoy(i+1, fmt.Sprintf("h%02d.%s.example.com", (i*7)%12, []string{"web", "db", "web_x"}[i%3]))
		e.Method, e.Rule = methods[i%3], fmt.Sprintf("rule%d", i%2)
		e.PolicyRevision = []string{"rev-a", "rev-b"}[i%2]
		e.CreatedAt = t0.Add(time.Duration(i/2*2) * time.Second)
		enroll(t, s, e)
	}
	if _, err := s.RevokeEnvoys(ctx, []store.Revocation{{UUID: uuidN(3), Reason: "x", At: t0.Add(time.Hour)}, {UUID: uuidN(8), Reason: "y", At: t0.Add(time.Hour)}}); err != nil {
		t.Fatalf("RevokeEnvoys: %v", err)
	}
	var cs []store.Checkin
	for i := 1; i <= 12; i += 2 { // odd ones checked in; envoy 1 first, long ago
		cs = append(cs, store.Checkin{UUID: uuidN(i), At: t0.Add(time.Duration(i) * time.Minute), AgentVersion: []string{"v1", "v2"}[i%4/2], Addr: "192.0.2.1:1"})
	}
	if err := s.RecordCheckins(ctx, cs); err != nil {
		t.Fatalf("RecordCheckins: %v", err)
	}
	all, err := s.ListEnvoys(ctx, store.EnvoyFilter{})
	if err != nil {
		t.Fatalf("ListEnvoys: %v", err)
	}
	return all
}

// sortedBy orders es as the store must for q (a reference implementation).
func sortedBy(es []store.Envoy, q store.EnvoyQuery) []store.Envoy {
	out := slices.Clone(es)
	slices.SortFunc(out, func(a, b store.Envoy) int {
		var c int
		switch q.Sort {
		case store.SortCreated:
			c = a.CreatedAt.Compare(b.CreatedAt)
		case store.SortSeen:
			c = a.Seen().Compare(b.Seen())
		default:
			c = strings.Compare(a.Hostname, b.Hostname)
		}
		if c == 0 {
			c = strings.Compare(a.UUID, b.UUID)
		}
		if q.Desc {
			c = -c
		}
		return c
	})
	return out
}

func testQueryEnvoys(t *testing.T, s store.Store) {
	ctx := t.Context()
	all := browseFleet(t, s)
	where := func(keep func(store.Envoy) bool) []store.Envoy {
		var out []store.Envoy
		for _, e := range all {
			if keep(e) {
				out = append(out, e)
			}
		}
		return out
	}
	stale := t0.Add(5 * time.Minute)
	filters := []struct {
		name string
		q    store.EnvoyQuery
		keep func(store.Envoy) bool
	}{
		{"all", store.EnvoyQuery{}, func(store.Envoy) bool { return true }},
		{"active", store.EnvoyQuery{Status: store.StatusActive}, func(e store.Envoy) bool { return e.Status == store.StatusActive }},
		{"method", store.EnvoyQuery{Method: "token"}, func(e store.Envoy) bool { return e.Method == "token" }},
		{"rule", store.EnvoyQuery{Rule: "rule1"}, func(e store.Envoy) bool { return e.Rule == "rule1" }},
		{"revision", store.EnvoyQuery{PolicyRevision: "rev-a"}, func(e store.Envoy) bool { return e.PolicyRevision == "rev-a" }},
		{"version", store.EnvoyQuery{AgentVersion: "v2"}, func(e store.Envoy) bool { return e.AgentVersion == "v2" }},
		{"search", store.EnvoyQuery{Search: ".db."}, func(e store.Envoy) bool { return strings.Contains(e.Hostname, ".db.") }},
		// LIKE wildcards in a search are plain characters.
		{"search underscore", store.EnvoyQuery{Search: "web_"}, func(e store.Envoy) bool { return strings.Contains(e.Hostname, "web_") }},
		{"search percent", store.EnvoyQuery{Search: "%"}, func(store.Envoy) bool { return false }},
		// Stale: not seen since; an envoy that never checked in counts from its enrollment.
		{"seen before", store.EnvoyQuery{SeenBefore: stale}, func(e store.Envoy) bool { return e.Seen().Before(stale) }},
		{"stale active token", store.EnvoyQuery{Status: store.StatusActive, Method: "token", SeenBefore: stale},
			func(e store.Envoy) bool {
				return e.Status == store.StatusActive && e.Method == "token" && e.Seen().Before(stale)
			}},
	}
	orders := []store.EnvoyQuery{
		{}, {Desc: true}, {Sort: store.SortCreated}, {Sort: store.SortCreated, Desc: true},
		{Sort: store.SortSeen}, {Sort: store.SortSeen, Desc: true},
	}
	for _, f := range filters {
		want := where(f.keep)
		t.Run(f.name+" count", func(t *testing.T) {
			n, err := s.CountEnvoys(ctx, f.q)
			if err != nil || n != len(want) {
				t.Errorf("CountEnvoys = %d, %v; want %d", n, err, len(want))
			}
			// A limit caps the count (and a cursor changes nothing).
			capped := f.q
			capped.Limit, capped.After = 3, &store.EnvoyCursor{Hostname: "zzz", UUID: "z"}
			n, err = s.CountEnvoys(ctx, capped)
			if want := min(len(want), 3); err != nil || n != want {
				t.Errorf("CountEnvoys(limit 3) = %d, %v; want %d", n, err, want)
			}
		})
		for _, o := range orders {
			q := f.q
			q.Sort, q.Desc = o.Sort, o.Desc
			want := sortedBy(want, q)
			t.Run(fmt.Sprintf("%s by %s desc=%v", f.name, cmpOr(o.Sort), o.Desc), func(t *testing.T) {
				got, err := s.QueryEnvoys(ctx, q)
				if err != nil {
					t.Fatalf("QueryEnvoys: %v", err)
				}
				if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
					t.Fatalf("QueryEnvoys(%+v) (-want +got):\n%s", q, diff)
				}
				// Pages of 5 forwards with After, then backwards with
				// Before from the end, make up the same list.
				var fwd []store.Envoy
				page := q
				page.Limit = 5
				for range 10 {
					es, err := s.QueryEnvoys(ctx, page)
					if err != nil {
						t.Fatalf("QueryEnvoys(page): %v", err)
					}
					fwd = append(fwd, es...)
					if len(es) < page.Limit {
						break
					}
					c := q.Cursor(es[len(es)-1])
					page.After = &c
				}
				if diff := cmp.Diff(want, fwd, cmpOpts...); diff != "" {
					t.Errorf("pages forwards (-want +got):\n%s", diff)
				}
				var back []store.Envoy
				page = q
				page.Limit = 5
				if len(want) > 0 {
					c := q.Cursor(want[len(want)-1])
					page.Before = &c
					back = want[len(want)-1:]
				}
				for range 10 {
					if page.Before == nil {
						break
					}
					es, err := s.QueryEnvoys(ctx, page)
					if err != nil {
						t.Fatalf("QueryEnvoys(page before): %v", err)
					}
					back = append(slices.Clone(es), back...)
					if len(es) < page.Limit {
						break
					}
					c := q.Cursor(es[0])
					page.Before = &c
				}
				if diff := cmp.Diff(want, back, cmpOpts...); diff != "" {
					t.Errorf("pages backwards (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func testQueryAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	var in []store.AuditEvent
	for i := range 20 {
		ev := store.AuditEvent{
			// Two events share each time; times go back and forth a little.
			At:     t0.Add(time.Duration(i/2) * time.Second),
			Type:   []string{store.AuditRegistration, store.AuditEnvoyRevoked, store.AuditTokenCreated, store.AuditRegistration}[i%4],
			Result: []string{"allowed", "ok", "ok", "denied"}[i%4], Hostname: fmt.Sprintf("h%d.example.com", i%3),
			EnvoyUUID: uuidN(i % 2), Reason: fmt.Sprintf("reason %d", i),
		}
		if i%5 == 0 {
			ev.Actor = "alice"
		}
		in = append(in, ev)
	}
	if err := s.AppendAudit(ctx, in...); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	stored := listAudit(t, s) // oldest first, IDs assigned
	newest := slices.Clone(stored)
	slices.Reverse(newest)
	where := func(keep func(store.AuditEvent) bool) []store.AuditEvent {
		var out []store.AuditEvent
		for _, e := range newest {
			if keep(e) {
				out = append(out, e)
			}
		}
		return out
	}
	mid := store.AuditCursor{At: newest[7].At, ID: newest[7].ID}
	tests := []struct {
		name string
		q    store.AuditQuery
		want []store.AuditEvent
	}{
		{"all newest first", store.AuditQuery{}, newest},
		{"limit", store.AuditQuery{Limit: 3}, newest[:3]},
		{"types", store.AuditQuery{Types: []string{store.AuditEnvoyRevoked, store.AuditTokenCreated}},
			where(func(e store.AuditEvent) bool { return e.Type != store.AuditRegistration })},
		{"result", store.AuditQuery{Result: "denied"}, where(func(e store.AuditEvent) bool { return e.Result == "denied" })},
		{"hostname", store.AuditQuery{Hostname: "h1.example.com"}, where(func(e store.AuditEvent) bool { return e.Hostname == "h1.example.com" })},
		{"envoy", store.AuditQuery{EnvoyUUID: uuidN(1), Limit: 2}, where(func(e store.AuditEvent) bool { return e.EnvoyUUID == uuidN(1) })[:2]},
		{"since until", store.AuditQuery{Since: t0.Add(2 * time.Second).In(berlin), Until: t0.Add(4 * time.Second)},
			where(func(e store.AuditEvent) bool {
				return !e.At.Before(t0.Add(2*time.Second)) && e.At.Before(t0.Add(4*time.Second))
			})},
		// Cursors split pairs of events with equal times by ID.
		{"before", store.AuditQuery{Before: &mid, Limit: 4}, newest[8:12]},
		{"after", store.AuditQuery{After: &mid}, newest[:7]},
		{"after newest ones", store.AuditQuery{After: &mid, Limit: 2}, newest[:2]},
		{"actor", store.AuditQuery{Actor: "alice", Limit: 3}, where(func(e store.AuditEvent) bool { return e.Actor == "alice" })[:3]},
		{"nothing", store.AuditQuery{Hostname: "zzz"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.QueryAudit(ctx, tc.q)
			if err != nil {
				t.Fatalf("QueryAudit: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpOpts...); diff != "" {
				t.Errorf("QueryAudit(%+v) (-want +got):\n%s", tc.q, diff)
			}
		})
	}
}

func testCountAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	deny := func(at time.Time, host, ip, tok, reason string) store.AuditEvent {
		return store.AuditEvent{At: at, Type: store.AuditRegistration, Result: "denied", Hostname: host, SourceIP: ip, TokenID: tok,
			Method: "approved", Reason: reason}
	}
	evs := []store.AuditEvent{
		deny(t0, "a.example.com", "192.0.2.1", "", "no rule allows a.example.com from 192.0.2.1: no token"),
		deny(t0, "b.example.com", "192.0.2.2", "", "no rule allows b.example.com from 192.0.2.2: no token"),
		deny(t0, "c.example.com", "", "", "no rule allows c.example.com from an unknown source address: no token"),
		deny(t0, "d.example.com", "192.0.2.4", "tok123", "token tok123 is bound to pattern *.x, which does not match d.example.com"),
		deny(t0.Add(-time.Hour), "e.example.com", "192.0.2.5", "", "no rule allows e.example.com from 192.0.2.5: no token"), // too old
		{At: t0, Type: store.AuditRegistration, Result: "allowed", Method: "token", Hostname: "f.example.com", Reason: "f.example.com matches"},
		{At: t0, Type: store.AuditRegistration, Result: "allowed", Method: "token", Hostname: "g.example.com", Reason: "g.example.com matches"},
		{At: t0, Type: store.AuditTokenCreated, Result: "ok"},
	}
	if err := s.AppendAudit(ctx, evs...); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	got, err := s.CountAudit(ctx, t0, store.AuditRegistration)
	if err != nil {
		t.Fatalf("CountAudit: %v", err)
	}
	reg := func(result, method, reason string, n int) store.AuditCount {
		return store.AuditCount{Type: store.AuditRegistration, Result: result, Method: method, Reason: reason, Count: n}
	}
	want := []store.AuditCount{
		reg("allowed", "token", "<host> matches", 2),
		reg("denied", "approved", "no rule allows <host> from <addr>: no token", 2),
		reg("denied", "approved", "no rule allows <host> from an unknown source address: no token", 1),
		reg("denied", "approved", "token <token> is bound to pattern *.x, which does not match <host>", 1),
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("CountAudit(registration) (-want +got):\n%s", diff)
	}
	all, err := s.CountAudit(ctx, t0.Add(-2*time.Hour))
	if err != nil {
		t.Fatalf("CountAudit(all): %v", err)
	}
	n := 0
	for _, c := range all {
		n += c.Count
	}
	if n != len(evs) {
		t.Errorf("CountAudit of every type since before all counts %d events, want %d: %+v", n, len(evs), all)
	}
}

func cmpOr(s store.EnvoySort) store.EnvoySort {
	if s == "" {
		return store.SortHostname
	}
	return s
}

func testCountFleet(t *testing.T, s store.Store) {
	ctx := t.Context()
	all := browseFleet(t, s)
	// Certificates end at different times: envoy i's in i days.
	for i, e := range all {
		err := s.RenewCertificate(ctx, store.RenewParams{UUID: e.UUID, OldSerial: e.CertSerial, NewSerial: fmt.Sprintf("%x", 1000+i),
			NotAfter: t0.Add(time.Duration(i+1) * 24 * time.Hour), Audit: store.AuditEvent{At: t0, Type: store.AuditEnvoyRenewed, Result: "ok"}})
		if err != nil && e.Status == store.StatusActive {
			t.Fatalf("RenewCertificate: %v", err)
		}
	}
	all, err := s.ListEnvoys(ctx, store.EnvoyFilter{})
	if err != nil {
		t.Fatal(err)
	}
	q := store.FleetQuery{SeenBefore: t0.Add(5 * time.Minute),
		CertEndsBefore: []time.Time{t0, t0.Add(4*24*time.Hour + time.Minute), t0.Add(365 * 24 * time.Hour)}}

	// The reference: the same counts over the listed envoys.
	groups := map[[2]string]store.FleetGroup{}
	for _, e := range all {
		k := [2]string{e.Status, e.AgentVersion}
		g, ok := groups[k]
		if !ok {
			g = store.FleetGroup{Status: e.Status, AgentVersion: e.AgentVersion, CertEnding: make([]int, len(q.CertEndsBefore))}
		}
		g.Envoys++
		if e.Seen().Before(q.SeenBefore) {
			g.Stale++
		}
		for i, h := range q.CertEndsBefore {
			if e.CertNotAfter.Before(h) {
				g.CertEnding[i]++
			}
		}
		groups[k] = g
	}
	var want []store.FleetGroup
	for _, g := range groups {
		want = append(want, g)
	}
	slices.SortFunc(want, func(a, b store.FleetGroup) int {
		return strings.Compare(a.Status+"\x00"+a.AgentVersion, b.Status+"\x00"+b.AgentVersion)
	})
	got, err := s.CountFleet(ctx, q)
	if err != nil {
		t.Fatalf("CountFleet: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CountFleet (-want +got):\n%s", diff)
	}
	if len(want) < 4 {
		t.Errorf("the fleet has %d groups: too few to test the grouping", len(want))
	}
	var some int
	for _, g := range want {
		some += g.CertEnding[1]
	}
	if some == 0 || some == len(all) {
		t.Errorf("%d of %d certificates end before the middle horizon: the test needs some, not all", some, len(all))
	}
}
