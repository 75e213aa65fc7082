package grpcapi

import (
	"bytes"
	"testing"
	"time"
)

// TestTicketKeyRotation: a ticket opens while its key issues tickets and
// for one period after, never later; a tampered ticket never opens.
func TestTicketKeyRotation(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	now := t0
	k := newTicketKeys(time.Hour, func() time.Time { return now })
	ticket := k.seal([]byte("session"))
	for _, c := range []struct {
		at   time.Duration
		open bool
	}{
		{0, true},
		{59 * time.Minute, true},
		{90 * time.Minute, true}, // rotated: the previous key still opens it
		{119 * time.Minute, true},
		{121 * time.Minute, false}, // two rotations: gone
	} {
		now = t0.Add(c.at)
		got, err := k.open(ticket)
		if (err == nil) != c.open || (err == nil && !bytes.Equal(got, []byte("session"))) {
			t.Errorf("at +%s: open = %q, %v; want opened %v", c.at, got, err, c.open)
		}
	}

	now = t0
	k = newTicketKeys(time.Hour, func() time.Time { return now })
	ticket = k.seal([]byte("session"))
	for i := range ticket {
		bad := bytes.Clone(ticket)
		bad[i] ^= 1
		if _, err := k.open(bad); err == nil {
			t.Fatalf("a ticket with byte %d flipped opened", i)
		}
	}
	for _, short := range [][]byte{nil, ticket[:3], ticket[:10]} {
		if _, err := k.open(short); err == nil {
			t.Errorf("a %d-byte ticket opened", len(short))
		}
	}
	// A long idle server does not keep a key older than two periods.
	now = t0.Add(5 * time.Hour)
	if _, err := k.open(ticket); err == nil {
		t.Error("a ticket opened after five hours of idleness")
	}
}
