package storetest

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
)

// BenchmarkEnroll measures Store.Enroll on the trusted path: no token, no
// replacement, one envoy and one audit event per operation.
func BenchmarkEnroll(b *testing.B, s store.Store) {
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e := newEnvoy(i, fmt.Sprintf("bench%d.example.com", i))
		e.Method, e.Rule = "trusted", "trusted_enrollment[0]"
		if _, err := s.Enroll(ctx, store.EnrollParams{Envoy: e, Now: e.CreatedAt, Audit: regAudit(e)}); err != nil {
			b.Fatalf("Enroll: %v", err)
		}
		i++
	}
}

// BenchmarkRecordCheckins measures Store.RecordCheckins with batches of
// batch check-ins of distinct envoys, each newer than the last.
func BenchmarkRecordCheckins(b *testing.B, s store.Store, batch int) {
	ctx := context.Background()
	for i := range batch {
		e := newEnvoy(i, fmt.Sprintf("bench%d.example.com", i))
		if _, err := s.Enroll(ctx, store.EnrollParams{Envoy: e, Now: e.CreatedAt, Audit: regAudit(e)}); err != nil {
			b.Fatalf("Enroll: %v", err)
		}
	}
	cs := make([]store.Checkin, batch)
	b.ReportAllocs()
	round := 0
	for b.Loop() {
		at := t0.Add(time.Duration(round+1) * time.Second)
		for i := range cs {
			cs[i] = store.Checkin{UUID: uuidN(i), At: at, AgentVersion: "1.0.0", Addr: "192.0.2.1:4242"}
		}
		if err := s.RecordCheckins(ctx, cs); err != nil {
			b.Fatalf("RecordCheckins: %v", err)
		}
		round++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/checkin")
}

// BenchmarkSeenNonce measures Store.SeenNonce from parallel callers, as
// replicas sharing the database record every check-in's nonce: the
// per-check-in statement of the capacity model (BENCHMARKS.md).
func BenchmarkSeenNonce(b *testing.B, s store.Store) {
	ctx := context.Background()
	const envoys = 1000
	for i := range envoys {
		e := newEnvoy(i, fmt.Sprintf("bench%d.example.com", i))
		if _, err := s.Enroll(ctx, store.EnrollParams{Envoy: e, Now: e.CreatedAt, Audit: regAudit(e)}); err != nil {
			b.Fatalf("Enroll: %v", err)
		}
	}
	var next atomic.Int64
	expires := time.Now().Add(5 * time.Minute)
	b.SetParallelism(16) // 32 callers on 2 cores: replicas' check-ins in flight
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		nonce := make([]byte, 16)
		for pb.Next() {
			n := next.Add(1)
			binary.BigEndian.PutUint64(nonce, uint64(n))
			if _, err := s.SeenNonce(ctx, uuidN(int(n%envoys)), nonce, expires); err != nil {
				b.Errorf("SeenNonce: %v", err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "nonces/s")
}

// Fleet fills s with n envoys the way a real fleet looks, for benchmarks
// of browsing at scale: hostnames h<i>.<team>.example.com over 20 teams,
// the three methods with a few rules each, two policy revisions, agent
// versions v1.0.0 to v1.2.0, a tenth revoked, and check-ins recorded at
// now for all but every 50th active envoy (seen an hour earlier: stale).
// Envoy i is created at now minus n-i seconds. Enrollments go through
// Store.Enroll, 64 at a time (the store commits concurrent writes
// together).
func Fleet(tb testing.TB, s store.Store, n int, now time.Time) {
	tb.Helper()
	ctx := context.Background()
	methods := []struct{ method, rule string }{
		{"trusted", `trusted_enrollment "dc1"`}, {"trusted", `trusted_enrollment "dc2"`},
		{"approved", `approved "*.web.example.com"`}, {"approved", `approved "*.db.example.com"`}, {"token", "token "},
	}
	envoy := func(i int) store.Envoy {
		m := methods[i%len(methods)]
		e := newEnvoy(i, fmt.Sprintf("h%d.team%d.example.com", i, i%20))
		e.Method, e.Rule = m.method, m.rule
		if m.method == "token" {
			e.TokenID = fmt.Sprintf("t%09d", i)
			e.Rule += e.TokenID
		}
		e.PolicyRevision = []string{"main@sha1:0a1b2c3d", "main@sha1:4e5f6a7b"}[i%7/6]
		e.CreatedAt = now.Add(-time.Duration(n-i) * time.Second)
		return e
	}
	const workers = 64
	errs := make(chan error, workers)
	next := make(chan int)
	for range workers {
		go func() {
			for i := range next {
				e := envoy(i)
				if _, err := s.Enroll(ctx, store.EnrollParams{Envoy: e, Now: e.CreatedAt, Audit: regAudit(e)}); err != nil {
					errs <- fmt.Errorf("enroll %d: %w", i, err)
					for range next {
					}
					return
				}
			}
			errs <- nil
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	for range workers {
		if err := <-errs; err != nil {
			tb.Fatal(err)
		}
	}
	var rs []store.Revocation
	var cs []store.Checkin
	for i := range n {
		switch {
		case i%10 == 9:
			rs = append(rs, store.Revocation{UUID: uuidN(i), Reason: "decommissioned", At: now})
		case i%50 == 0:
			cs = append(cs, store.Checkin{UUID: uuidN(i), At: now.Add(-time.Hour), AgentVersion: "v1.0.0", Addr: "192.0.2.1:4242"})
		default:
			cs = append(cs, store.Checkin{UUID: uuidN(i), At: now, AgentVersion: []string{"v1.0.0", "v1.1.0", "v1.2.0"}[i%3], Addr: "192.0.2.1:4242"})
		}
	}
	for len(rs) > 0 {
		k := min(len(rs), 1000)
		if _, err := s.RevokeEnvoys(ctx, rs[:k]); err != nil {
			tb.Fatal(err)
		}
		rs = rs[k:]
	}
	for len(cs) > 0 {
		k := min(len(cs), 5000)
		if err := s.RecordCheckins(ctx, cs[:k]); err != nil {
			tb.Fatal(err)
		}
		cs = cs[k:]
	}
}
