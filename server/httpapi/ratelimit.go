package httpapi

import (
	"math"
	"net/netip"
	"sync"
	"time"
)

// limiter is a per-address token bucket. Idle buckets are forgotten, so
// memory stays bounded by the number of addresses seen in the last minutes.
type limiter struct {
	rate  float64 // tokens per second; <0 disables
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), now: now, buckets: map[netip.Addr]*bucket{}}
}

// allow takes one token for addr; when none is left it returns how long
// until one is.
func (l *limiter) allow(addr netip.Addr) (bool, time.Duration) {
	if l.rate < 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		l.sweep(now)
	}
	b, ok := l.buckets[addr]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[addr] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

func (l *limiter) sweep(now time.Time) {
	l.swept = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for a, b := range l.buckets {
		if now.Sub(b.last) > full {
			delete(l.buckets, a) // refilled completely: same as a new bucket
		}
	}
}
