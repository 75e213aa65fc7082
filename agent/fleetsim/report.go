package fleetsim

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// WriteText writes the report for a person.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	rate := "saturate"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%.0f/s", r.Rate)
	}
	conns := fmt.Sprintf("%d connections, one check-in per connection (a TLS handshake each)", r.Connections)
	if r.Persistent {
		conns = fmt.Sprintf("%d persistent connections (one per envoy, opened in %s before the phase)", r.Connections, r.ConnectElapsed.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "servers        %s\n", strings.Join(r.Servers, ", "))
	fmt.Fprintf(&b, "envoys         %d (%d from state, %d registered now)\n", r.Envoys, r.Reused, r.Registration.OK)
	fmt.Fprintf(&b, "check-ins      rate %s, %s\n", rate, conns)
	if r.WarmUpElapsed > 0 {
		fmt.Fprintf(&b, "warm-up        every envoy checked in once before the phase to have a session to resume (%s)\n", r.WarmUpElapsed.Round(time.Millisecond))
	}
	if r.Registration.OK+r.Registration.Errors > 0 {
		writePhase(&b, "registration", r.Registration)
	}
	writePhase(&b, "checkin", r.Checkins)
	fmt.Fprintf(&b, "checkin rpc    p50 %s  p99 %s  (without connection set-up; %d handshakes, %d resumed)\n", ms(r.RPCP50), ms(r.RPCP99), r.Handshakes, r.Resumed)
	if r.ServerCPUPerCheckin > 0 {
		fmt.Fprintf(&b, "server cpu     %s per check-in (all servers' CPU time during the phase / check-ins)\n", ms(r.ServerCPUPerCheckin))
	}
	for _, s := range r.ServerRSS {
		if s.Error != "" {
			fmt.Fprintf(&b, "server rss     %s: unknown (%s)\n", s.Server, s.Error)
			continue
		}
		fmt.Fprintf(&b, "server rss     %s: %.1f MB at the end, %.1f MB peak during check-ins (%s)\n",
			s.Server, float64(s.Bytes)/(1<<20), float64(s.Peak)/(1<<20), s.Source)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writePhase(b *strings.Builder, name string, p Phase) {
	fmt.Fprintf(b, "%-14s %d ok, %d errors in %s: %.0f/s  p50 %s  p99 %s  max %s\n",
		name, p.OK, p.Errors, p.Elapsed.Round(time.Millisecond), p.PerSec, ms(p.P50), ms(p.P99), ms(p.Max))
	if p.Errors > 0 {
		var kinds []string
		for _, k := range slices.Sorted(maps.Keys(p.ErrorKinds)) {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, p.ErrorKinds[k]))
		}
		fmt.Fprintf(b, "%-14s %s; first: %s\n", "  errors", strings.Join(kinds, ", "), p.FirstError)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
