// Package ratelimit holds the token buckets that bound what callers can
// make the server do: the open HTTPS endpoints per source address and per
// source network, registrations on the bcrypt path for the whole server,
// and each envoy's check-ins.
package ratelimit

import (
	"sync"
	"time"
)

// Limit is a token bucket's shape: PerSecond tokens are added every
// second, up to Burst. A PerSecond of zero or less means no limit, so the
// zero Limit limits nothing.
type Limit struct {
	PerSecond float64
	Burst     int
}

// Off reports whether l limits nothing.
func (l Limit) Off() bool { return l.PerSecond <= 0 }

// refill is how long an empty bucket takes to fill up.
func (l Limit) refill() time.Duration {
	return time.Duration(float64(l.Burst) / l.PerSecond * float64(time.Second))
}

// Bucket is one token bucket. Its zero value is full. It is not safe for
// concurrent use: its owner locks.
type Bucket struct {
	used float64   // tokens taken and not yet refilled
	last time.Time // when used was last brought up to date
}

// Take takes one token at now; when none is left it reports how long
// until one is. An Off limit always allows.
func (b *Bucket) Take(now time.Time, l Limit) (ok bool, wait time.Duration) {
	if l.Off() {
		return true, 0
	}
	if !b.last.IsZero() {
		b.used = max(0, b.used-now.Sub(b.last).Seconds()*l.PerSecond)
	}
	b.last = now
	if b.used+1 <= float64(l.Burst) {
		b.used++
		return true, 0
	}
	return false, time.Duration((b.used + 1 - float64(l.Burst)) / l.PerSecond * float64(time.Second))
}

// Full reports whether the bucket would be full at now, so that its owner
// can forget it (a forgotten bucket is a full one).
func (b *Bucket) Full(now time.Time, l Limit) bool {
	return b.last.IsZero() || l.Off() || now.Sub(b.last) >= l.refill()
}

// Shared is one bucket for many callers, safe for concurrent use.
type Shared struct {
	limit Limit
	now   func() time.Time
	mu    sync.Mutex
	b     Bucket
}

// NewShared returns a shared bucket; now nil means time.Now.
func NewShared(l Limit, now func() time.Time) *Shared {
	if now == nil {
		now = time.Now
	}
	return &Shared{limit: l, now: now}
}

// Take takes one token (see Bucket.Take).
func (s *Shared) Take() (bool, time.Duration) {
	if s.limit.Off() {
		return true, 0
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Take(now, s.limit)
}

// Keyed is a bucket per key (a source address, a network), safe for
// concurrent use. Buckets that have filled up again are forgotten about
// once a minute, so memory is bounded by the keys seen in the last
// minutes.
type Keyed[K comparable] struct {
	limit   Limit
	now     func() time.Time
	mu      sync.Mutex
	buckets map[K]*Bucket
	swept   time.Time
}

// NewKeyed returns a bucket per key; now nil means time.Now.
func NewKeyed[K comparable](l Limit, now func() time.Time) *Keyed[K] {
	if now == nil {
		now = time.Now
	}
	return &Keyed[K]{limit: l, now: now, buckets: map[K]*Bucket{}}
}

// Take takes one token from key's bucket (see Bucket.Take).
func (k *Keyed[K]) Take(key K) (bool, time.Duration) {
	if k.limit.Off() {
		return true, 0
	}
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.swept) > time.Minute {
		k.swept = now
		for key, b := range k.buckets {
			if b.Full(now, k.limit) {
				delete(k.buckets, key)
			}
		}
	}
	b, ok := k.buckets[key]
	if !ok {
		b = &Bucket{}
		k.buckets[key] = b
	}
	return b.Take(now, k.limit)
}

// Len returns the number of buckets held.
func (k *Keyed[K]) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.buckets)
}
