package grpcapi

import "time"

// nonceCache remembers check-in nonces until the timestamp they came with
// leaves the acceptance window; after that a replay is refused by the
// timestamp check instead. It is global (nonces are 128 random bits, so
// envoys never collide by chance) and bounded: when full it refuses new
// nonces rather than forgetting old ones, which would let replays through.
type nonceCache struct {
	shardedMap[[16]byte, int64] // nonce -> expiry, unix seconds
}

type nonceResult int

const (
	nonceOK nonceResult = iota
	nonceReplayed
	nonceFull
)

func newNonceCache(max int) *nonceCache {
	c := &nonceCache{}
	c.init(max)
	return c
}

// add records nonce until expires. now is the server's current time.
func (c *nonceCache) add(nonce [16]byte, expires, now time.Time) nonceResult {
	// The nonce is random: its first byte is as good a shard key as any.
	s := c.shard(nonce[0])
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
