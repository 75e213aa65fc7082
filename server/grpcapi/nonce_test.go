package grpcapi

import (
	"testing"
	"time"
)

func TestNonceCache(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	n := func(b byte, i byte) [16]byte { return [16]byte{b, i} }
	c := newNonceCache(shardCount * 2) // two per shard
	steps := []struct {
		name    string
		nonce   [16]byte
		expires time.Time
		now     time.Time
		want    nonceResult
	}{
		{"new", n(0, 1), now.Add(5 * time.Minute), now, nonceOK},
		{"replayed", n(0, 1), now.Add(5 * time.Minute), now.Add(time.Minute), nonceReplayed},
		{"replayed at window end", n(0, 1), now.Add(5 * time.Minute), now.Add(5 * time.Minute), nonceReplayed},
		{"second in shard", n(0, 2), now.Add(5 * time.Minute), now, nonceOK},
		{"shard full", n(0, 3), now.Add(5 * time.Minute), now, nonceFull},
		{"other shard", n(1, 3), now.Add(5 * time.Minute), now, nonceOK},
		{"room after expiry", n(0, 3), now.Add(20 * time.Minute), now.Add(10 * time.Minute), nonceOK},
		{"expired one forgotten", n(0, 1), now.Add(20 * time.Minute), now.Add(10 * time.Minute), nonceOK},
	}
	for _, s := range steps {
		if got := c.add(s.nonce, s.expires, s.now); got != s.want {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
	if got := c.len(); got != 3 {
		t.Errorf("len = %d, want 3", got)
	}
}

func TestRevokedMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		en   entry
		want string
	}{
		{"policy", entry{uuid: "u1", reason: "decommissioned", revokedRevision: "3f2a9c1deadbeef"}, "envoy u1 is revoked: decommissioned (policy 3f2a9c1)"},
		{"operator", entry{uuid: "u2", reason: "stolen"}, "envoy u2 is revoked: stolen"},
		{"replaced", entry{uuid: "u3", reason: "replaced", replacedBy: "u4"}, "envoy u3 is revoked: replaced (replaced by u4)"},
		{"no reason", entry{uuid: "u5"}, "envoy u5 is revoked: no reason given"},
	}
	for _, tt := range tests {
		if got := revokedMessage(&tt.en); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
