package grpcapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/vigo-enroll/vigo/server/store"
)

// entry is the in-memory view of one envoy. Entries are immutable: a change
// replaces the whole entry.
type entry struct {
	uuid            string
	hostname        string
	known           bool // false: no such envoy in the store
	status          string
	serial          string
	pub             ed25519.PublicKey
	flags           store.EnvoyFlags
	reason          string
	revokedRevision string
	replacedBy      string
	loadedAt        time.Time
}

func newEntry(e store.Envoy, now time.Time) *entry {
	en := &entry{
		uuid: e.UUID, hostname: e.Hostname, known: true, status: e.Status, serial: e.CertSerial,
		flags: e.EnvoyFlags, reason: e.RevokedReason, revokedRevision: e.RevokedRevision,
		replacedBy: e.ReplacedBy, loadedAt: now,
	}
	if len(e.PublicKey) == ed25519.PublicKeySize {
		en.pub = ed25519.PublicKey(e.PublicKey)
	}
	return en
}

// directory caches envoys by UUID so that the hot path (handshake,
// interceptor, check-in) reads no database.
//
// Freshness: EnvoyChanged drops an entry at once (changes made through
// this replica are seen by the next request). Changes made by other
// replicas are picked up by refresh, every RefreshInterval: that interval
// is the staleness bound for revocations and flags set elsewhere. A
// certificate whose serial differs from the cached one is confirmed against
// the store before it is refused (at most once per second per envoy), so a
// renewal done on another replica never locks an envoy out.
type directory struct {
	store store.Store
	now   func() time.Time

	m   sync.Map // uuid -> *entry
	gen atomic.Uint64
	sf  singleflight.Group
}

// get returns the envoy's entry, loading it from the store on a miss.
func (d *directory) get(ctx context.Context, uuid string) (*entry, error) {
	if v, ok := d.m.Load(uuid); ok {
		return v.(*entry), nil
	}
	return d.load(ctx, uuid)
}

// load reads the envoy from the store and caches it, unless EnvoyChanged
// was called meanwhile (then it reads again so that a stale read never
// overwrites a fresher invalidation).
func (d *directory) load(ctx context.Context, uuid string) (*entry, error) {
	v, err, _ := d.sf.Do(uuid, func() (any, error) {
		for range 3 {
			g := d.gen.Load()
			e, err := d.store.GetEnvoy(ctx, uuid)
			var en *entry
			switch {
			case errors.Is(err, store.ErrNotFound):
				en = &entry{uuid: uuid, loadedAt: d.now()}
			case err != nil:
				return nil, fmt.Errorf("load envoy %s: %w", uuid, err)
			default:
				en = newEntry(e, d.now())
			}
			if d.gen.Load() == g {
				d.m.Store(uuid, en)
				return en, nil
			}
		}
		return nil, fmt.Errorf("load envoy %s: changed while loading", uuid)
	})
	if err != nil {
		return nil, err
	}
	return v.(*entry), nil
}

// confirm reloads an entry that would refuse cert serial when the cached
// entry is older than a second; it returns the entry to judge by.
func (d *directory) confirm(ctx context.Context, en *entry, serial string) (*entry, error) {
	if !en.known || en.status != store.StatusActive || en.serial == serial {
		return en, nil
	}
	if d.now().Sub(en.loadedAt) < time.Second {
		return en, nil
	}
	return d.load(ctx, en.uuid)
}

// invalidate drops an entry so that the next request reads the store.
func (d *directory) invalidate(uuid string) {
	d.gen.Add(1)
	d.m.Delete(uuid)
}

// refresh re-reads every cached envoy from the store in one query.
func (d *directory) refresh(ctx context.Context) error {
	g := d.gen.Load()
	all, err := d.store.ListEnvoys(ctx, store.EnvoyFilter{})
	if err != nil {
		return fmt.Errorf("refresh envoys: %w", err)
	}
	if d.gen.Load() != g {
		return nil // an invalidation raced with the read; the next round catches up
	}
	now := d.now()
	byUUID := make(map[string]store.Envoy, len(all))
	for _, e := range all {
		byUUID[e.UUID] = e
	}
	d.m.Range(func(k, v any) bool {
		uuid := k.(string)
		if e, ok := byUUID[uuid]; ok {
			d.m.CompareAndSwap(uuid, v, newEntry(e, now))
		} else {
			d.m.CompareAndSwap(uuid, v, &entry{uuid: uuid, loadedAt: now})
		}
		return true
	})
	return nil
}
