package server

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestPreviousAdminTokenExpires: the previous token is accepted until the
// end of its grace period and refused from then on.
func TestPreviousAdminTokenExpires(t *testing.T) {
	cfg := &Config{}
	cfg.Server.DataDir = t.TempDir()
	p := cfg.StatePaths()
	old, _, _, _, err := adminToken(p.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	oldTok, err := readAdminToken(p.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	var rotations []time.Time
	f := newAdminTokenFiles(p, old, slog.New(slog.DiscardHandler), func(u time.Time) { rotations = append(rotations, u) })
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	now := t0
	f.now = func() time.Time { return now }

	r, err := RotateAdminToken(p, "", 30*time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	oldCaller, err := f.Authenticate(ctx, oldTok)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at      time.Duration
		tok     string
		allowed bool
	}{
		{0, r.Token, true},
		{0, oldTok, true},
		{29 * time.Minute, oldTok, true},
		{30 * time.Minute, oldTok, false},
		{30 * time.Minute, r.Token, true},
		{30 * time.Minute, " " + r.Token + "\n", true},
	} {
		now = t0.Add(c.at)
		_, err := f.Authenticate(ctx, c.tok)
		if (err == nil) != c.allowed {
			t.Errorf("at +%s, token %.8s…: err = %v, want allowed %v", c.at, strings.TrimSpace(c.tok), err, c.allowed)
		}
	}
	now = t0.Add(29 * time.Minute)
	if ok, _ := f.StillValid(ctx, oldCaller); !ok {
		t.Error("a session made with the previous token ended within its grace period")
	}
	now = t0.Add(30 * time.Minute)
	if ok, _ := f.StillValid(ctx, oldCaller); ok {
		t.Error("a session made with the previous token outlived its grace period")
	}
	if len(rotations) != 1 || !rotations[0].Equal(t0.Add(30*time.Minute)) {
		t.Errorf("rotations seen = %v, want one ending the previous token at +30m", rotations)
	}
	if f.cur != sha256.Sum256([]byte(r.Token)) {
		t.Error("the current hash is not the new token's")
	}
}
