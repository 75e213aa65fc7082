package grpcapi

import (
	"sync"
	"time"
)

// nonceShards spreads the replay cache over independently locked maps so
// that concurrent check-ins rarely contend.
const nonceShards = 64

// nonceCache remembers check-in nonces until the timestamp they came with
// leaves the acceptance window; after that a replay is refused by the
// timestamp check instead. It is global (nonces are 128 random bits, so
// envoys never collide by chance) and bounded: when full it refuses new
// nonces rather than forgetting old ones, which would let replays through.
type nonceCache struct {
	maxPerShard int
	shards      [nonceShards]nonceShard
}

type nonceShard struct {
	mu        sync.Mutex
	m         map[[16]byte]int64 // nonce -> expiry, unix seconds
	nextSweep int64
	_         [40]byte // keep shards on separate cache lines
}

type nonceResult int

const (
	nonceOK nonceResult = iota
	nonceReplayed
	nonceFull
)

func newNonceCache(max int) *nonceCache {
	c := &nonceCache{maxPerShard: max / nonceShards}
	if c.maxPerShard < 1 {
		c.maxPerShard = 1
	}
	for i := range c.shards {
		c.shards[i].m = make(map[[16]byte]int64)
	}
	return c
}

// add records nonce until expires. now is the server's current time.
func (c *nonceCache) add(nonce [16]byte, expires, now time.Time) nonceResult {
	// The nonce is random: its first byte is as good a shard key as any.
	s := &c.shards[int(nonce[0])%nonceShards]
	nowS := now.Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	if exp, ok := s.m[nonce]; ok && exp >= nowS {
		return nonceReplayed
	}
	if nowS >= s.nextSweep || len(s.m) >= c.maxPerShard {
		for k, exp := range s.m {
			if exp < nowS {
				delete(s.m, k)
			}
		}
		s.nextSweep = nowS + 30
	}
	if len(s.m) >= c.maxPerShard {
		return nonceFull
	}
	// Round up so that a nonce is never forgotten before its window ends.
	s.m[nonce] = expires.Unix() + 1
	return nonceOK
}

// len returns the number of remembered nonces.
func (c *nonceCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
