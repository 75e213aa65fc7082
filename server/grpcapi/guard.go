package grpcapi

import (
	"hash/maphash"
	"slices"
	"time"

	"github.com/vigo-enroll/vigo/server/ratelimit"
)

// maxNoncesPerEnvoy bounds the check-in nonces remembered per envoy. An
// agent checks in once per interval (a minute by default) and a nonce is
// remembered for at most twice the clock-skew window (10 minutes), so a
// well-behaved envoy needs about ten; when an envoy has more, the oldest
// is dropped and the envoy's floor rises to its timestamp (see add).
const maxNoncesPerEnvoy = 16

// guard keeps, per envoy, what bounds that envoy alone: a token bucket for
// its requests and the nonces of its recent check-ins against replay.
//
// Why per envoy: a global cache keyed by the client's nonce let one
// enrolled envoy fill it (or the shard its chosen nonces fell in) and have
// every other envoy's check-ins refused. Here an envoy's state is bounded
// (one bucket, maxNoncesPerEnvoy nonces), and the number of states by the
// number of envoys that passed mutual TLS recently, so a flooding envoy
// only exhausts its own share.
//
// Replays stay refused however many nonces an envoy sends: a nonce is
// dropped only when its timestamp has left the acceptance window (then the
// timestamp check refuses it) or when the envoy has maxNoncesPerEnvoy
// newer ones, in which case the envoy's floor is raised to the dropped
// timestamp and anything signed at or before the floor is refused.
type guard struct {
	shardedMap[string, *envoyState] // envoy uuid -> state
	limit                           ratelimit.Limit
	seed                            maphash.Seed
}

type envoyState struct {
	bucket ratelimit.Bucket
	// floor: check-ins signed at or before it are refused (Unix ns).
	floor int64
	seen  []seenNonce
}

type seenNonce struct {
	nonce   [16]byte
	signed  int64 // the check-in's timestamp, Unix ns
	expires int64 // when the timestamp leaves the window, Unix s
}

type nonceResult int

const (
	nonceOK nonceResult = iota
	nonceReplayed
	nonceStale // signed at or before the envoy's floor
)

func newGuard(limit ratelimit.Limit) *guard {
	g := &guard{limit: limit, seed: maphash.MakeSeed()}
	g.init(0) // the bound is per envoy, not per shard
	return g
}

// state returns uuid's shard, locked, and its state (created when absent).
// The caller unlocks the shard.
func (g *guard) state(uuid string, now time.Time) (*shard[string, *envoyState], *envoyState) {
	// A keyed hash picks the shard: UUIDs are not random in every
	// deployment (tests, imports), and nobody can aim at one shard.
	s := g.shard(byte(maphash.String(g.seed, uuid)))
	s.mu.Lock()
	if nowS := now.Unix(); nowS >= s.nextSweep {
		s.nextSweep = nowS + 30
		for id, st := range s.m {
			st.expire(nowS)
			if len(st.seen) == 0 && st.bucket.Full(now, g.limit) {
				// Nothing left that a new state would not also say: the
				// floor is below every timestamp the window still accepts.
				delete(s.m, id)
			}
		}
	}
	st, ok := s.m[uuid]
	if !ok {
		st = &envoyState{}
		s.m[uuid] = st
	}
	return s, st
}

// take takes a request token of the envoy; when none is left it returns
// how long until one is.
func (g *guard) take(uuid string, now time.Time) (bool, time.Duration) {
	if g.limit.Off() {
		return true, 0
	}
	s, st := g.state(uuid, now)
	defer s.mu.Unlock()
	return st.bucket.Take(now, g.limit)
}

// add records a check-in nonce of the envoy, signed at signed, until
// expires; now is the server's time.
func (g *guard) add(uuid string, nonce [16]byte, signed, expires, now time.Time) nonceResult {
	s, st := g.state(uuid, now)
	defer s.mu.Unlock()
	ts, nowS := signed.UnixNano(), now.Unix()
	if ts <= st.floor {
		return nonceStale
	}
	for _, n := range st.seen {
		if n.nonce == nonce && n.expires >= nowS {
			return nonceReplayed
		}
	}
	if len(st.seen) >= maxNoncesPerEnvoy {
		st.expire(nowS)
	}
	if len(st.seen) >= maxNoncesPerEnvoy {
		oldest := 0
		for i, n := range st.seen {
			if n.signed < st.seen[oldest].signed {
				oldest = i
			}
		}
		if ts <= st.seen[oldest].signed {
			return nonceStale // older than all it would displace
		}
		st.floor = st.seen[oldest].signed
		st.seen = slices.Delete(st.seen, oldest, oldest+1)
	}
	// Round up so that a nonce is never forgotten before its window ends.
	st.seen = append(st.seen, seenNonce{nonce: nonce, signed: ts, expires: expires.Unix() + 1})
	return nonceOK
}

// expire drops the nonces whose window has ended by nowS.
func (st *envoyState) expire(nowS int64) {
	st.seen = slices.DeleteFunc(st.seen, func(n seenNonce) bool { return n.expires < nowS })
}

// nonces returns the number of nonces remembered (for the metric).
func (g *guard) nonces() int {
	n := 0
	for i := range g.shards {
		s := &g.shards[i]
		s.mu.Lock()
		for _, st := range s.m {
			n += len(st.seen)
		}
		s.mu.Unlock()
	}
	return n
}
