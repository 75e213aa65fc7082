package loadtest

import (
	"context"
	"testing"
	"time"
)

// TestRunSmall checks that the load generator works end to end (tiny run,
// no thresholds).
func TestRunSmall(t *testing.T) {
	rep, err := Run(context.Background(), Config{Dir: t.TempDir(), Envoys: 4, Round: 100 * time.Millisecond, Rounds: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Result{rep.Checkin, rep.Baseline} {
		if r.Requests == 0 || r.Errors != 0 {
			t.Errorf("%s: %d requests, %d errors (first: %v)", r.Name, r.Requests, r.Errors, r.FirstError)
		}
	}
}

// BenchmarkLoad runs the load test once per mode and reports check-ins per
// second, the baseline's, their ratio and latencies. "full" signs and
// verifies in the load generator too, as agents do (on their own
// machines); "server" pre-signs and skips answer checks, so the CPU goes to
// the server. Run it with:
//
//	go test -run '^$' -bench Load -benchtime 1x ./server/grpcapi/loadtest
func BenchmarkLoad(b *testing.B) {
	for _, mode := range []struct {
		name       string
		serverOnly bool
	}{{"full", false}, {"server", true}} {
		b.Run(mode.name, func(b *testing.B) {
			var rep Report
			for b.Loop() {
				var err error
				rep, err = Run(context.Background(), Config{Dir: b.TempDir(), Envoys: 64, Round: time.Second, Rounds: 3, ServerOnly: mode.serverOnly})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.Logf("%d envoys\n%s\n%s\nratio %.2f", rep.Envoys, rep.Checkin, rep.Baseline, rep.Ratio())
			b.ReportMetric(rep.Checkin.PerSec, "checkins/s")
			b.ReportMetric(rep.Baseline.PerSec, "baseline/s")
			b.ReportMetric(rep.Ratio(), "ratio")
			b.ReportMetric(float64(rep.Checkin.P50.Microseconds()), "checkin-p50-µs")
			b.ReportMetric(float64(rep.Checkin.P99.Microseconds()), "checkin-p99-µs")
			b.ReportMetric(float64(rep.Checkin.CPUPerReq.Microseconds()), "checkin-cpu-µs/req")
			b.ReportMetric(float64(rep.Baseline.CPUPerReq.Microseconds()), "baseline-cpu-µs/req")
			b.ReportMetric(float64(rep.Checkin.Errors+rep.Baseline.Errors), "errors")
		})
	}
}
