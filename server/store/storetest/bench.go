package storetest

import (
	"context"
	"fmt"
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
