package grpcapi

import (
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/ratelimit"
)

func TestGuardNonces(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	n := func(i byte) [16]byte { return [16]byte{0, i} }
	g := newGuard(ratelimit.Limit{PerSecond: -1})
	window := 5 * time.Minute
	add := func(uuid string, nonce [16]byte, signed, at time.Time) nonceResult {
		return g.add(uuid, nonce, signed, signed.Add(window), at)
	}
	steps := []struct {
		name   string
		uuid   string
		nonce  [16]byte
		signed time.Time
		at     time.Time
		want   nonceResult
	}{
		{"new", "a", n(1), now, now, nonceOK},
		{"replayed", "a", n(1), now, now.Add(time.Minute), nonceReplayed},
		{"replayed at window end", "a", n(1), now, now.Add(window), nonceReplayed},
		{"same nonce, other envoy", "b", n(1), now, now, nonceOK},
		{"older than the last is fine", "a", n(2), now.Add(-time.Minute), now, nonceOK},
	}
	for _, s := range steps {
		if got := add(s.uuid, s.nonce, s.signed, s.at); got != s.want {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
	// Envoy c floods: it never holds more than maxNoncesPerEnvoy nonces,
	// and what it displaced stays refused through its floor.
	for i := range 3 * maxNoncesPerEnvoy {
		if got := add("c", n(byte(i)), now.Add(time.Duration(i)*time.Millisecond), now); got != nonceOK {
			t.Fatalf("c flood %d: %v", i, got)
		}
	}
	if got := add("c", n(0), now, now); got != nonceStale {
		t.Errorf("c replays a displaced check-in: %v, want stale", got)
	}
	if got := add("c", n(200), now.Add(time.Millisecond), now); got != nonceStale {
		t.Errorf("c sends a new check-in older than all it holds: %v, want stale", got)
	}
	if got := add("c", n(201), now.Add(time.Second), now); got != nonceOK {
		t.Errorf("c sends a newer check-in: %v, want ok", got)
	}
	if got := g.nonces(); got != 2+1+maxNoncesPerEnvoy {
		t.Errorf("nonces = %d, want %d (a: 2, b: 1, c: %d)", got, 2+1+maxNoncesPerEnvoy, maxNoncesPerEnvoy)
	}
	// The others are untouched by c.
	if got := add("a", n(3), now, now); got != nonceOK {
		t.Errorf("a after c's flood: %v", got)
	}
	// After the window everything is forgotten, floors included.
	later := now.Add(2 * window)
	if got := add("c", n(0), later, later); got != nonceOK {
		t.Errorf("c after the window: %v", got)
	}
	s, st := g.state("c", later)
	got, floor := len(st.seen), st.floor
	s.mu.Unlock()
	if got != 1 || floor != 0 {
		t.Errorf("c after the window: %d nonces, floor %d; want 1, 0", got, floor)
	}
}

func TestGuardRate(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	g := newGuard(ratelimit.Limit{PerSecond: 1, Burst: 2})
	for i, want := range []bool{true, true, false} {
		if ok, _ := g.take("a", now); ok != want {
			t.Errorf("a take %d: %v, want %v", i, ok, want)
		}
	}
	if ok, _ := g.take("b", now); !ok {
		t.Error("b refused because of a")
	}
	if ok, wait := g.take("a", now); ok || wait != time.Second {
		t.Errorf("a: %v, %v; want refused for 1s", ok, wait)
	}
	if ok, _ := g.take("a", now.Add(time.Second)); !ok {
		t.Error("a refused after a second")
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
