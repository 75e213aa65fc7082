package grpcapi

import "sync"

// shardCount is how many independently locked maps the hot caches (replay
// nonces, verified client chains) are split into, so that concurrent
// check-ins and handshakes rarely contend.
const shardCount = 64

// shardedMap is a map split into shardCount locked shards, the shard
// picked by a byte of the key that is random or a keyed hash of it (chain
// hashes; envoy UUIDs through maphash). An owner that bounds the map reads
// maxPerShard; what happens when a shard is full is the owner's rule.
type shardedMap[K comparable, V any] struct {
	maxPerShard int
	shards      [shardCount]shard[K, V]
}

type shard[K comparable, V any] struct {
	mu        sync.Mutex
	m         map[K]V
	nextSweep int64    // unix seconds: when the owner next drops expired entries
	_         [40]byte // keep shards on separate cache lines
}

// init makes the shards, with room for total entries in all.
func (c *shardedMap[K, V]) init(total int) {
	c.maxPerShard = max(total/shardCount, 1)
	for i := range c.shards {
		c.shards[i].m = make(map[K]V)
	}
}

// shard returns the shard of a key whose first byte is first.
func (c *shardedMap[K, V]) shard(first byte) *shard[K, V] {
	return &c.shards[int(first)%shardCount]
}

// len returns the number of entries.
func (c *shardedMap[K, V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// clear drops every entry.
func (c *shardedMap[K, V]) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}
