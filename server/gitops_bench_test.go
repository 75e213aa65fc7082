package server_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
)

// BenchmarkPushToActive measures, on loopback, the time from a finished
// git push to the new revision being active: announced by the webhook, and
// found by polling every second. It reports the median and the worst.
func BenchmarkPushToActive(b *testing.B) {
	for _, mode := range []string{"webhook", "poll-1s"} {
		b.Run(mode, func(b *testing.B) {
			repo := gitsynctest.NewRepo(b)
			c := repo.Commit(map[string]string{"policy.cue": basePolicy}, "base")
			repo.Push()
			hs := gitsynctest.NewHTTPServer(b, repo.Bare, gitsynctest.HTTPOptions{})
			interval := time.Hour
			if mode == "poll-1s" {
				interval = time.Second
			}
			in := gitServer(b, repo, hs, b.TempDir(), interval)
			for st := policyStatus(b, in); st.Active == nil || st.Active.Revision != c; st = policyStatus(b, in) {
				time.Sleep(5 * time.Millisecond)
			}
			var took []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				rev := repo.Commit(map[string]string{"policy.cue": strings.Replace(basePolicy, "base.test", fmt.Sprintf("b%d.test", i), 1)}, "change")
				repo.Push()
				b.StartTimer()
				start := time.Now()
				if mode == "webhook" {
					if code := webhook(b, in, "push", "{}", webhookSecret); code != 202 {
						b.Fatalf("webhook: HTTP %d", code)
					}
				}
				for {
					st := policyStatus(b, in)
					if st.Active != nil && st.Active.Revision == rev {
						break
					}
					time.Sleep(2 * time.Millisecond)
				}
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "p50-ms")
			b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "max-ms")
		})
	}
}
