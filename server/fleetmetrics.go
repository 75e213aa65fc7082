package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigo-enroll/vigo/schemas/buildinfo"
	"github.com/vigo-enroll/vigo/server/store"
)

// certHorizons are the certificate expiry windows the fleet gauges count,
// with their label.
var certHorizons = []struct {
	label string
	d     time.Duration
}{{"7d", 7 * 24 * time.Hour}, {"30d", 30 * 24 * time.Hour}}

// fleetCollector exports the fleet's gauges (envoys by status, stale
// envoys, agent versions, certificates about to expire) and
// vigo_build_info. The counts come from one Store.CountFleet query, made
// at most once per ttl whatever the number of scrapes (they are cached in
// between), so that a scrape costs the database a fixed amount even with
// a large fleet and several Prometheus servers.
type fleetCollector struct {
	store      store.Store
	now        func() time.Time
	staleAfter time.Duration
	ttl        time.Duration
	log        *slog.Logger

	mu     sync.Mutex
	at     time.Time
	groups []store.FleetGroup

	build, envoys, stale, versions, expiring *prometheus.Desc
}

func newFleetCollector(st store.Store, staleAfter, ttl time.Duration, log *slog.Logger) *fleetCollector {
	return &fleetCollector{
		store: st, now: time.Now, staleAfter: staleAfter, ttl: ttl, log: log,
		build: prometheus.NewDesc("vigo_build_info", "The server's build: 1, labelled with its version, commit and Go version.",
			[]string{"version", "commit", "goversion"}, nil),
		envoys: prometheus.NewDesc("vigo_envoys", "Envoys by status (active, revoked).", []string{"status"}, nil),
		stale: prometheus.NewDesc("vigo_envoys_stale",
			"Active envoys not seen for three check-in intervals (or enrolled that long ago and never seen).", nil, nil),
		versions: prometheus.NewDesc("vigo_envoys_agent_version",
			"Active envoys by the agent version of their last check-in (\"\" for none yet).", []string{"version"}, nil),
		expiring: prometheus.NewDesc("vigo_envoy_certificates_expiring",
			"Active envoys whose certificate ends within the window (7d, 30d), expired ones included.", []string{"within"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.build, c.envoys, c.stale, c.versions, c.expiring} {
		ch <- d
	}
}

// counts returns the fleet's groups, from the cache when younger than
// ttl. On a failed query the last counts are kept (ok is false when there
// are none): the gauges go missing rather than drop to zero.
func (c *fleetCollector) counts() (gs []store.FleetGroup, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !c.at.IsZero() && now.Sub(c.at) < c.ttl {
		return c.groups, true
	}
	q := store.FleetQuery{SeenBefore: now.Add(-c.staleAfter)}
	for _, h := range certHorizons {
		q.CertEndsBefore = append(q.CertEndsBefore, now.Add(h.d))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs, err := c.store.CountFleet(ctx, q)
	if err != nil {
		c.log.Error("count the fleet for the metrics", "err", err)
		return c.groups, !c.at.IsZero()
	}
	c.at, c.groups = now, gs
	return gs, true
}

// Collect implements prometheus.Collector.
func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	b := buildinfo.Get()
	ch <- prometheus.MustNewConstMetric(c.build, prometheus.GaugeValue, 1, b.Version, b.Commit, b.Go)
	gs, ok := c.counts()
	if !ok {
		return
	}
	byStatus := map[string]int{store.StatusActive: 0, store.StatusRevoked: 0}
	versions := map[string]int{}
	stale := 0
	expiring := make([]int, len(certHorizons))
	for _, g := range gs {
		byStatus[g.Status] += g.Envoys
		if g.Status != store.StatusActive {
			continue
		}
		versions[g.AgentVersion] += g.Envoys
		stale += g.Stale
		for i := range expiring {
			expiring[i] += g.CertEnding[i]
		}
	}
	for s, n := range byStatus {
		ch <- prometheus.MustNewConstMetric(c.envoys, prometheus.GaugeValue, float64(n), s)
	}
	ch <- prometheus.MustNewConstMetric(c.stale, prometheus.GaugeValue, float64(stale))
	for v, n := range versions {
		ch <- prometheus.MustNewConstMetric(c.versions, prometheus.GaugeValue, float64(n), v)
	}
	for i, h := range certHorizons {
		ch <- prometheus.MustNewConstMetric(c.expiring, prometheus.GaugeValue, float64(expiring[i]), h.label)
	}
}
