package grpcapi_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/grpcapi"
	"github.com/vigo-enroll/vigo/server/grpcapi/grpcapitest"
	"github.com/vigo-enroll/vigo/server/store"
)

// countingStore counts the store calls of the check-in path.
type countingStore struct {
	store.Store
	recordCalls, recorded, nonces, envoyReads, listReads atomic.Int64
}

func (c *countingStore) RecordCheckins(ctx context.Context, cs []store.Checkin) error {
	c.recordCalls.Add(1)
	c.recorded.Add(int64(len(cs)))
	return c.Store.RecordCheckins(ctx, cs)
}

func (c *countingStore) SeenNonce(ctx context.Context, uuid string, nonce []byte, exp time.Time) (bool, error) {
	c.nonces.Add(1)
	return c.Store.SeenNonce(ctx, uuid, nonce, exp)
}

func (c *countingStore) GetEnvoy(ctx context.Context, uuid string) (store.Envoy, error) {
	c.envoyReads.Add(1)
	return c.Store.GetEnvoy(ctx, uuid)
}

func (c *countingStore) ListEnvoys(ctx context.Context, f store.EnvoyFilter) ([]store.Envoy, error) {
	c.listReads.Add(1)
	return c.Store.ListEnvoys(ctx, f)
}

// TestStoreWritesPerCheckin (issue 19, item 4): the inputs of the
// capacity model in BENCHMARKS.md are what the code does. A check-in
// writes nothing to the store by itself: its last-seen update joins one
// RecordCheckins call per flush (one UPDATE statement on PostgreSQL, one
// transaction on SQLite), holding each envoy once however often it
// checked in; with replicas (SharedNonces) it adds one SeenNonce write;
// and a warm envoy directory reads no envoy per check-in.
func TestStoreWritesPerCheckin(t *testing.T) {
	const envoys, rounds = 20, 3
	for _, shared := range []bool{false, true} {
		var cs *countingStore
		e := grpcapitest.New(t, grpcapitest.Options{Config: func(c *grpcapi.Config) {
			cs = &countingStore{Store: c.Store}
			c.Store, c.SharedNonces = cs, shared
			c.FlushInterval = time.Hour   // flushed by hand below
			c.RefreshInterval = time.Hour // no background re-read during the test
		}})
		var vs []grpcapitest.Envoy
		for i := range envoys {
			vs = append(vs, e.EnrollNow(fmt.Sprintf("host%d.example.com", i)))
		}
		// Warm: one check-in each reads each envoy once.
		ctx := context.Background()
		for _, v := range vs {
			if _, err := e.RawClient(v.Cert, v.Key).Checkin(ctx, grpcapitest.SignedRequest(v, time.Now())); err != nil {
				t.Fatal(err)
			}
		}
		reads := cs.envoyReads.Load() + cs.listReads.Load()
		nonces := cs.nonces.Load()
		for r := range rounds {
			for _, v := range vs {
				req := grpcapitest.SignedRequest(v, time.Now().Add(time.Duration(r+1)*time.Millisecond))
				if _, err := e.RawClient(v.Cert, v.Key).Checkin(ctx, req); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := cs.envoyReads.Load() + cs.listReads.Load() - reads; got != 0 {
			t.Errorf("shared nonces %v: %d envoy reads for %d warm check-ins; the model assumes none", shared, got, envoys*rounds)
		}
		wantNonces := int64(0)
		if shared {
			wantNonces = envoys * rounds
		}
		if got := cs.nonces.Load() - nonces; got != wantNonces {
			t.Errorf("shared nonces %v: %d nonce writes for %d check-ins, want %d", shared, got, envoys*rounds, wantNonces)
		}
		if cs.recordCalls.Load() != 0 {
			t.Errorf("shared nonces %v: %d RecordCheckins before the flush: a check-in wrote by itself", shared, cs.recordCalls.Load())
		}
		e.Server.Flush(ctx)
		if calls, rec := cs.recordCalls.Load(), cs.recorded.Load(); calls != 1 || rec != envoys {
			t.Errorf("shared nonces %v: one flush made %d RecordCheckins calls holding %d check-ins; want 1 holding %d (each envoy once)", shared, calls, rec, envoys)
		}
	}
}
