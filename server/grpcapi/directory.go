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
	// checkinFloor is the newest signed check-in time recorded in the
	// store when the entry was read: check-ins must be newer.
	checkinFloor time.Time
	loadedAt     time.Time
}

func newEntry(e store.Envoy, now time.Time) *entry {
	en := &entry{
		uuid: e.UUID, hostname: e.Hostname, known: true, status: e.Status, serial: e.CertSerial,
		flags: e.EnvoyFlags, reason: e.RevokedReason, revokedRevision: e.RevokedRevision,
		replacedBy: e.ReplacedBy, checkinFloor: e.LastCheckinSigned, loadedAt: now,
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
//
// refresh reads only the envoys changed since the previous refresh (less
// refreshOverlap), not all of them: with 100,000 envoys a full read every
// 10 s took a tenth of a core, for nothing most of the time.
type directory struct {
	store store.Store
	now   func() time.Time

	m   sync.Map // uuid -> *entry
	gen atomic.Uint64
	sf  singleflight.Group

	// since is where the next refresh starts reading changes; zero until
	// the first refresh (or warm), which starts refreshOverlap before the
	// directory was made. Used by the refresh goroutine only.
	since time.Time
	made  time.Time
}

// refreshOverlap is how far back each refresh reads again. Changes are
// stamped with the clock of the replica that made them when their
// transaction started, so a change can become visible after a refresh
// that started later than its stamp: the overlap covers transactions that
// take that long and replica clocks that far apart (check-ins already
// require clocks within 5 minutes).
const refreshOverlap = 5*time.Minute + 10*time.Second

func newDirectory(st store.Store, now func() time.Time) *directory {
	return &directory{store: st, now: now, made: now()}
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
			// Store, then check that no invalidation came in meanwhile (an
			// invalidation between a check and the store would otherwise
			// be overwritten by this older read).
			d.m.Store(uuid, en)
			if d.gen.Load() == g {
				return en, nil
			}
			d.m.CompareAndDelete(uuid, en)
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

// refresh re-reads the cached envoys that changed in the store since the
// last refresh (see refreshOverlap). Envoys not cached stay out: they are
// read when first needed.
func (d *directory) refresh(ctx context.Context) error {
	// The store stamps changes with its own clock, the wall clock (d.now
	// can be a test clock for certificate times).
	start := d.now()
	since := d.since
	if since.IsZero() {
		since = d.made.Add(-refreshOverlap)
	}
	g := d.gen.Load()
	changed, err := d.store.ListEnvoys(ctx, store.EnvoyFilter{ChangedSince: since})
	if err != nil {
		return fmt.Errorf("refresh envoys: %w", err)
	}
	if d.gen.Load() != g {
		return nil // an invalidation raced with the read; the next round reads the same changes again
	}
	now := d.now()
	for _, e := range changed {
		// Only over the entry read before: an invalidation meanwhile
		// deleted it, and the next get reads the store.
		if v, ok := d.m.Load(e.UUID); ok {
			d.m.CompareAndSwap(e.UUID, v, newEntry(e, now))
		}
	}
	d.since = start.Add(-refreshOverlap)
	return nil
}

// warm fills the directory with the active envoys in one query, so that
// after a start the first check-in of each envoy does not read the store
// on its own (100,000 envoys reconnecting after a restart). Entries read
// meanwhile are kept; if anything was invalidated during the read, what
// warm stored is dropped again, to be read when needed.
func (d *directory) warm(ctx context.Context) (int, error) {
	g := d.gen.Load()
	all, err := d.store.ListEnvoys(ctx, store.EnvoyFilter{Status: store.StatusActive})
	if err != nil {
		return 0, fmt.Errorf("warm envoy directory: %w", err)
	}
	now := d.now()
	stored := make([]*entry, 0, len(all))
	for _, e := range all {
		en := newEntry(e, now)
		if _, loaded := d.m.LoadOrStore(e.UUID, en); !loaded {
			stored = append(stored, en)
		}
	}
	if d.gen.Load() != g {
		for _, en := range stored {
			d.m.CompareAndDelete(en.uuid, en)
		}
		return 0, nil
	}
	return len(stored), nil
}
