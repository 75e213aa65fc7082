package policyctl_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/policy/sandbox"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/policyctl"
)

// BenchmarkPushToActive measures, over smart HTTP on loopback, the time
// from a completed push to the new revision being active through SyncNow
// (what the webhook and `vigocli policy sync` do). Run with -benchtime=20x;
// p50 and p90 are reported as extra metrics.
func BenchmarkPushToActive(b *testing.B) {
	repo := gitsynctest.NewRepo(b)
	repo.Commit(map[string]string{"policy/policy.cue": validPolicy}, "initial")
	repo.Push()
	url := gitsynctest.ServeHTTP(b, repo.Bare)
	src, err := gitsync.NewGit(gitsync.GitConfig{URL: url, Path: "policy"})
	if err != nil {
		b.Fatal(err)
	}
	ctl, err := policyctl.New(policyctl.Config{Source: src, Store: openStore(b), Interval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := ctl.SyncNow(ctx); err != nil {
		b.Fatal(err)
	}
	var lat, total []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		t0 := time.Now()
		id := repo.Commit(map[string]string{"policy/policy.cue": fmt.Sprintf("package policy\n\napproved: [\"h%d.example.com\"]\n", i)}, "change")
		repo.Push()
		b.StartTimer()
		t1 := time.Now()
		if _, err := ctl.SyncNow(ctx); err != nil {
			b.Fatal(err)
		}
		if got := ctl.Active().Revision(); got != id {
			b.Fatalf("active %s, want %s", got, id)
		}
		lat = append(lat, time.Since(t1))
		total = append(total, time.Since(t0))
	}
	b.ReportMetric(pct(lat, 50), "p50-ms")
	b.ReportMetric(pct(lat, 90), "p90-ms")
	b.ReportMetric(pct(total, 50), "p50-commit+push+sync-ms")
}

func pct(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[(len(s)-1)*p/100].Microseconds()) / 1000
}

// largePolicy has 10,000 approved patterns and 1,000 trusted entries.
func largePolicy() map[string]string {
	var approved, trusted strings.Builder
	approved.WriteString("package policy\n\napproved: [\n")
	for i := range 10000 {
		fmt.Fprintf(&approved, "\t\"host-%05d.apps.example.com\",\n", i)
	}
	approved.WriteString("]\n")
	trusted.WriteString("package policy\n\ntrusted_enrollment: [\n")
	for i := range 1000 {
		fmt.Fprintf(&trusted, "\t{name: \"rack-%04d\", pattern: \"*.rack%04d.dc.example.com\", cidrs: [\"10.%d.%d.0/24\", \"fd00:%x::/64\"]},\n", i, i, i/256, i%256, i)
	}
	trusted.WriteString("]\n")
	return map[string]string{"policy/approved.cue": approved.String(), "policy/trusted.cue": trusted.String()}
}

// BenchmarkSyncLargePolicy measures a full sync of a large policy from a
// file:// remote: list, shallow fetch into memory, evaluation in the
// sandbox (a child process), compilation, persist to SQLite, audit. Each iteration uses a fresh source and controller, so
// nothing is cached. B/op is the memory allocated per sync.
func BenchmarkSyncLargePolicy(b *testing.B) {
	repo := gitsynctest.NewRepo(b)
	id := repo.Commit(largePolicy(), "large")
	repo.Push()
	st := openStore(b)
	ctx := context.Background()

	b.Run("sync", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			src, err := gitsync.NewGit(gitsync.GitConfig{URL: repo.URL(), Path: "policy"})
			if err != nil {
				b.Fatal(err)
			}
			ctl, err := policyctl.New(policyctl.Config{Source: src, Store: st})
			if err != nil {
				b.Fatal(err)
			}
			s, err := ctl.SyncNow(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if s.Active == nil || s.Active.Revision != id {
				b.Fatalf("not applied: %+v", s.Attempted)
			}
		}
	})
	b.Run("load-only", func(b *testing.B) {
		var files []policy.File
		for name, content := range largePolicy() {
			files = append(files, policy.File{Name: strings.TrimPrefix(name, "policy/"), Data: []byte(content)})
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := policy.Load(files, id); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("evaluate-in-sandbox", func(b *testing.B) {
		// What the server does per revision: the evaluation in a child
		// process with its limits, then the compilation here. Compare with
		// load-only, the same work in this process without limits.
		var files []policy.File
		for name, content := range largePolicy() {
			files = append(files, policy.File{Name: strings.TrimPrefix(name, "policy/"), Data: []byte(content)})
		}
		b.ReportAllocs()
		for b.Loop() {
			spec, err := sandbox.Evaluate(ctx, files, sandbox.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := spec.Compile(id); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("poll-unchanged", func(b *testing.B) {
		src, err := gitsync.NewGit(gitsync.GitConfig{URL: repo.URL(), Path: "policy"})
		if err != nil {
			b.Fatal(err)
		}
		ctl, err := policyctl.New(policyctl.Config{Source: src, Store: st})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ctl.SyncNow(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ctl.SyncNow(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPolicyBomb measures, for each policy bomb written into a watched
// folder (the controller running as in the server, default budget), the time
// from the write to the refusal and how much this process's resident memory
// grew. Run with -benchtime=3x; the figures are per bomb.
func BenchmarkPolicyBomb(b *testing.B) {
	for _, bomb := range []struct{ name, content string }{{"memory", memoryBomb()}, {"cpu", cpuBomb}} {
		b.Run(bomb.name, func(b *testing.B) {
			dir := b.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "policy.cue"), []byte(validPolicy), 0o644); err != nil {
				b.Fatal(err)
			}
			src, err := gitsync.NewDir(gitsync.DirConfig{Path: dir})
			if err != nil {
				b.Fatal(err)
			}
			ctl, err := policyctl.New(policyctl.Config{Source: src, Store: openStore(b), Interval: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go src.Run(ctx)
			go ctl.Run(ctx)
			waitFor := func(ok func(apiv1.PolicyStatus) bool) {
				for deadline := time.Now().Add(time.Minute); !ok(ctl.Status()); time.Sleep(5 * time.Millisecond) {
					if time.Now().After(deadline) {
						b.Fatalf("timed out; status %+v", ctl.Status())
					}
				}
			}
			waitFor(func(s apiv1.PolicyStatus) bool { return s.Healthy })
			var refusal time.Duration
			var grew int64
			for i := 0; b.Loop(); i++ {
				before := rssBytes(b)
				// A different comment each time: a new revision to judge.
				content := fmt.Sprintf("%s// %d\n", bomb.content, i)
				t0 := time.Now()
				if err := os.WriteFile(filepath.Join(dir, "zz_bomb.cue"), []byte(content), 0o644); err != nil {
					b.Fatal(err)
				}
				waitFor(func(s apiv1.PolicyStatus) bool { return s.Attempted != nil && s.Attempted.Kind == "budget" })
				refusal += time.Since(t0)
				grew = max(grew, rssBytes(b)-before)
				if err := os.Remove(filepath.Join(dir, "zz_bomb.cue")); err != nil {
					b.Fatal(err)
				}
				waitFor(func(s apiv1.PolicyStatus) bool { return s.Healthy })
			}
			b.ReportMetric(float64(refusal.Milliseconds())/float64(b.N), "ms-to-refusal")
			b.ReportMetric(float64(grew)/(1<<20), "max-rss-growth-MB")
		})
	}
}

// rssBytes is this process's resident set size (Linux), or 0.
func rssBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}
