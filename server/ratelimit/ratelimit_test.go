package ratelimit

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_800_000_000, 0)
	l := Limit{PerSecond: 2, Burst: 3}
	var b Bucket
	steps := []struct {
		name string
		at   time.Duration
		ok   bool
		wait time.Duration
	}{
		{"full 1", 0, true, 0},
		{"full 2", 0, true, 0},
		{"full 3", 0, true, 0},
		{"empty", 0, false, 500 * time.Millisecond},
		{"still empty", 250 * time.Millisecond, false, 250 * time.Millisecond},
		{"refilled one", 500 * time.Millisecond, true, 0},
		{"empty again", 500 * time.Millisecond, false, 500 * time.Millisecond},
		{"refilled fully, no more", 10 * time.Second, true, 0},
	}
	for _, s := range steps {
		ok, wait := b.Take(start.Add(s.at), l)
		if ok != s.ok || wait != s.wait {
			t.Errorf("%s: Take = %v, %v; want %v, %v", s.name, ok, wait, s.ok, s.wait)
		}
	}
	if b.Full(start.Add(10*time.Second), l) {
		t.Error("Full right after a take")
	}
	if !b.Full(start.Add(12*time.Second), l) {
		t.Error("not Full after the refill time")
	}
	for _, l := range []Limit{{PerSecond: -1}, {}} {
		var off Bucket
		for range 100 {
			if ok, _ := off.Take(start, l); !ok {
				t.Fatalf("Limit %+v refused", l)
			}
		}
	}
}

func TestKeyedForgetsFullBuckets(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	k := NewKeyed[string](Limit{PerSecond: 1, Burst: 1}, func() time.Time { return now })
	if ok, _ := k.Take("a"); !ok {
		t.Fatal("a: refused")
	}
	if ok, wait := k.Take("a"); ok || wait != time.Second {
		t.Fatalf("a again: %v, %v; want refused for 1s", ok, wait)
	}
	if ok, _ := k.Take("b"); !ok {
		t.Fatal("b: refused because of a")
	}
	now = now.Add(2 * time.Minute)
	k.Take("c")
	if n := k.Len(); n != 1 {
		t.Fatalf("%d buckets after the sweep, want 1 (c)", n)
	}
}

func TestShared(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	s := NewShared(Limit{PerSecond: 0.5, Burst: 2}, func() time.Time { return now })
	got := []bool{}
	for range 3 {
		ok, _ := s.Take()
		got = append(got, ok)
	}
	if got[0] != true || got[1] != true || got[2] != false {
		t.Fatalf("takes = %v, want [true true false]", got)
	}
	if _, wait := s.Take(); wait != 2*time.Second {
		t.Fatalf("wait = %v, want 2s", wait)
	}
}
