package grpcapi

import (
	"context"
	"fmt"
	"path"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"

	"github.com/vigo-enroll/vigo/schemas/agentpb"
)

type metrics struct {
	requests          *prometheus.CounterVec
	duration          *prometheus.HistogramVec
	handshakeRefusals *prometheus.CounterVec
	resumptions       *prometheus.CounterVec
	flushed           prometheus.Counter
	flushErrors       prometheus.Counter
	connections       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, g *guard) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigo_grpc_requests_total",
			Help: "Agent gRPC requests by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vigo_grpc_request_duration_seconds",
			Help:    "Time to serve agent gRPC requests.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, .5},
		}, []string{"method"}),
		handshakeRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigo_grpc_handshake_refusals_total",
			Help: "TLS handshakes refused, by reason (envoy_revoked, certificate_not_current, envoy_unknown, not_an_envoy_certificate, tls).",
		}, []string{"reason"}),
		resumptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigo_grpc_session_resumptions_total",
			Help: "TLS session tickets presented, by result: accepted (the handshake resumes), declined (the envoy was revoked or renewed, or the certificate expired: a full handshake follows), unknown_ticket (another replica's, or its key expired).",
		}, []string{"result"}),
		flushed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigo_grpc_checkins_recorded_total",
			Help: "Check-ins written to the store in batches.",
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigo_grpc_checkin_flush_errors_total",
			Help: "Failed batched writes of check-ins.",
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigo_grpc_connections",
			Help: "Open agent connections (each costs memory; see server.grpc_idle_timeout).",
		}),
	}
	// Every known series exists from the start, at zero: a rate() over
	// it, and an alert on it, works before the first event.
	for _, r := range []agentpb.Refusal{agentpb.RefusalEnvoyRevoked, agentpb.RefusalCertificateNotCurrent,
		agentpb.RefusalEnvoyUnknown, agentpb.RefusalNotAnEnvoyCertificate} {
		m.handshakeRefusals.WithLabelValues((&RefusedError{Reason: r}).label())
	}
	m.handshakeRefusals.WithLabelValues("tls")
	for _, r := range []string{"accepted", "declined", "unknown_ticket"} {
		m.resumptions.WithLabelValues(r)
	}
	for _, name := range []string{agentpb.AgentService_Checkin_FullMethodName, agentpb.AgentService_RenewCertificate_FullMethodName} {
		m.duration.WithLabelValues(path.Base(name))
		m.requests.WithLabelValues(path.Base(name), codes.OK.String())
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.requests, m.duration, m.handshakeRefusals, m.resumptions, m.flushed, m.flushErrors, m.connections,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "vigo_grpc_nonce_cache_entries",
			Help: "Check-in nonces remembered against replay (at most 16 per envoy).",
		}, func() float64 { return float64(g.nonces()) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// connStats counts open connections for the vigo_grpc_connections gauge.
type connStats struct{ g prometheus.Gauge }

func (c connStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (c connStats) HandleRPC(context.Context, stats.RPCStats)                         {}
func (c connStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c connStats) HandleConn(_ context.Context, s stats.ConnStats) {
	switch s.(type) {
	case *stats.ConnBegin:
		c.g.Inc()
	case *stats.ConnEnd:
		c.g.Dec()
	}
}
