package grpcapi

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
)

// checkinBatcher collects the latest check-in of each envoy in memory and
// writes them to the store in one call per flush interval, so that a
// check-in costs no database write on its own. At most one interval of
// last_seen updates is lost if the process dies.
type checkinBatcher struct {
	store  store.Store
	logger *slog.Logger
	m      *metrics

	mu      sync.Mutex
	pending map[string]store.Checkin
}

// record keeps c as the envoy's pending check-in, with the newest signed
// timestamp of those it replaces (check-ins may arrive out of order).
func (b *checkinBatcher) record(c store.Checkin) {
	b.mu.Lock()
	if old, ok := b.pending[c.UUID]; ok && old.Signed.After(c.Signed) {
		c.Signed = old.Signed
	}
	b.pending[c.UUID] = c
	b.mu.Unlock()
}

// flush writes the pending check-ins. On failure they are kept (unless a
// newer check-in of the same envoy arrived meanwhile) for the next flush.
func (b *checkinBatcher) flush(ctx context.Context) {
	b.mu.Lock()
	if len(b.pending) == 0 {
		b.mu.Unlock()
		return
	}
	batch := b.pending
	b.pending = make(map[string]store.Checkin, len(batch))
	b.mu.Unlock()

	cs := make([]store.Checkin, 0, len(batch))
	for _, c := range batch {
		cs = append(cs, c)
	}
	if err := b.store.RecordCheckins(ctx, cs); err != nil {
		b.m.flushErrors.Inc()
		b.logger.Error("record check-ins", "count", len(cs), "err", err)
		b.mu.Lock()
		for uuid, c := range batch {
			if newer, ok := b.pending[uuid]; !ok {
				b.pending[uuid] = c
			} else if c.Signed.After(newer.Signed) {
				newer.Signed = c.Signed
				b.pending[uuid] = newer
			}
		}
		b.mu.Unlock()
		return
	}
	b.m.flushed.Add(float64(len(cs)))
}

func (b *checkinBatcher) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.flush(ctx)
		}
	}
}
