// Package fleetsim simulates a fleet of envoys against one or more Vigo
// Enroll servers and measures them: it registers N envoys over HTTPS (the
// trusted path, in parallel over keep-alive connections), then runs signed
// check-ins over mutual-TLS gRPC at a set rate, or as fast as the servers
// answer, and reports throughput, latency percentiles, errors and the
// servers' resident memory.
//
// Every simulated envoy is a real one as far as the server can tell: it
// has its own Ed25519 key and certificate, signs its own check-ins with a
// fresh nonce, and checks in over a TLS connection authenticated by its own
// certificate (the server refuses a check-in whose UUID is not the one in
// the connection's client certificate, so envoys cannot share one
// connection). Config.Connections bounds how many connections are open at
// once: when it is at least the number of envoys, every envoy keeps one
// persistent connection, as real agents do; when it is smaller, each
// connection carries one check-in of one envoy and is then replaced by a
// connection of the next envoy, so every check-in pays a full TLS
// handshake (the server disables session tickets). That is a pessimistic
// bound on the server's CPU per check-in and an optimistic one on its
// memory: a real fleet keeps one idle connection per envoy open.
//
// It is a client: it imports only the wire contracts (schemas), gRPC and
// the standard library, never the server.
package fleetsim

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Config is one simulator run. Zero values are defaults.
type Config struct {
	// Servers are the servers' HTTPS base URLs (required). Registrations
	// are spread over them round-robin; each envoy checks in with the
	// gRPC address the server that registered it gave.
	Servers []string
	// Envoys is the number of envoys (default 100).
	Envoys int
	// Rate is the total check-ins per second; 0 sends as fast as the
	// servers answer (saturation).
	Rate float64
	// Duration is how long the check-in phase lasts (default 10s).
	Duration time.Duration
	// Connections bounds the gRPC connections open at once (default 64,
	// at most Envoys). See the package doc.
	Connections int
	// Resume keeps each envoy's TLS session and resumes it at its next
	// connection, as agents do. Without persistent connections every
	// envoy first checks in once before the phase (a warm-up, as a
	// check-in interval earlier), so that the phase measures resumed
	// handshakes.
	Resume bool
	// HostnameSuffix ends every envoy hostname (default ".bench.test");
	// the server's policy must trust it from this machine's address.
	HostnameSuffix string
	// HostnamePrefix starts every envoy hostname (default "sim-" and 8
	// random hex digits and "-", so that runs do not collide).
	HostnamePrefix string
	// RootCAs verifies the servers' HTTPS certificates (nil: the system
	// roots, unless Insecure). Check-in connections verify the server
	// against the CA returned at registration.
	RootCAs *x509.CertPool
	// Insecure skips verifying the HTTPS certificates at registration.
	Insecure bool
	// State holds envoys registered by an earlier run; they are reused
	// (up to Envoys) and only the rest are registered.
	State *State
	// RegisterWorkers is the number of registrations in flight (default
	// 64).
	RegisterWorkers int
	// AdminToken, when set, is sent to read the servers' GET /metrics
	// (which needs an admin token of any role on the public port).
	AdminToken string
	// ServerPIDs, when set, are the server processes whose RSS is read
	// from /proc/PID/status; otherwise each server's GET /metrics is read.
	ServerPIDs []int
	// Progress receives a progress line every ProgressInterval (nil: none).
	Progress io.Writer
	// ProgressInterval defaults to 1s.
	ProgressInterval time.Duration
	// CallTimeout bounds each connection attempt and check-in (default 30s).
	CallTimeout time.Duration
}

func (c *Config) defaults() error {
	if len(c.Servers) == 0 {
		return errors.New("fleet simulator: no server")
	}
	if c.Envoys <= 0 {
		c.Envoys = 100
	}
	if c.Rate < 0 {
		return errors.New("fleet simulator: negative rate")
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Connections <= 0 {
		c.Connections = 64
	}
	if c.HostnameSuffix == "" {
		c.HostnameSuffix = ".bench.test"
	}
	if c.HostnamePrefix == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.HostnamePrefix = "sim-" + hex.EncodeToString(b[:]) + "-"
	}
	if c.RegisterWorkers <= 0 {
		c.RegisterWorkers = 64
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = time.Second
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 30 * time.Second
	}
	return nil
}

// Phase is the outcome of registration or of the check-in phase.
type Phase struct {
	// OK and Errors count successful and failed operations.
	OK     int64 `json:"ok"`
	Errors int64 `json:"errors"`
	// Elapsed is the phase's wall time; PerSec is OK / Elapsed.
	Elapsed time.Duration `json:"elapsed_ns"`
	PerSec  float64       `json:"per_sec"`
	// P50, P99 and Max are latencies of successful operations. For
	// check-ins they include the connection set-up when the check-in
	// needed a new connection.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
	// ErrorKinds counts errors by gRPC code or "connect"/"http".
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	// FirstError is the first error seen (never a secret).
	FirstError string `json:"first_error,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	Servers     []string `json:"servers"`
	Envoys      int      `json:"envoys"`
	Reused      int      `json:"reused"`
	Connections int      `json:"connections"`
	Persistent  bool     `json:"persistent"`
	Rate        float64  `json:"rate"`
	// Registration covers the envoys registered by this run.
	Registration Phase `json:"registration"`
	// Checkins is the check-in phase.
	Checkins Phase `json:"checkins"`
	// RPCP50 and RPCP99 are check-in latencies without connection set-up.
	RPCP50 time.Duration `json:"rpc_p50_ns"`
	RPCP99 time.Duration `json:"rpc_p99_ns"`
	// Handshakes is how many connections the check-in phase opened, and
	// Resumed how many of them resumed a TLS session (Config.Resume).
	Handshakes int64 `json:"handshakes"`
	Resumed    int64 `json:"resumed"`
	// WarmUpElapsed is how long the envoys' first connections took, made
	// before the phase to have a session to resume (Resume only).
	WarmUpElapsed time.Duration `json:"warm_up_elapsed_ns"`
	// ServerCPUPerCheckin is the servers' CPU time during the check-in
	// phase divided by the check-ins (zero when it could not be read).
	ServerCPUPerCheckin time.Duration `json:"server_cpu_per_checkin_ns"`
	// ConnectElapsed is how long opening the persistent connections took
	// before the check-in phase (zero when not persistent).
	ConnectElapsed time.Duration `json:"connect_elapsed_ns"`
	// ServerRSS is each server's resident memory.
	ServerRSS []RSS `json:"server_rss"`
	// State holds every envoy of the run, for State.Save.
	State *State `json:"-"`
}

// recorder collects the results of one phase from many goroutines.
type recorder struct {
	ok, errs atomic.Int64
	mu       sync.Mutex
	lat      []time.Duration
	rpc      []time.Duration
	kinds    map[string]int64
	first    string
}

func (r *recorder) success(lat, rpc []time.Duration) {
	r.mu.Lock()
	r.lat = append(r.lat, lat...)
	r.rpc = append(r.rpc, rpc...)
	r.mu.Unlock()
}

func (r *recorder) fail(kind string, err error) {
	r.errs.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kinds == nil {
		r.kinds = map[string]int64{}
	}
	r.kinds[kind]++
	if r.first == "" {
		r.first = err.Error()
	}
}

func (r *recorder) phase(elapsed time.Duration) Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Phase{OK: r.ok.Load(), Errors: r.errs.Load(), Elapsed: elapsed, ErrorKinds: r.kinds, FirstError: r.first}
	if elapsed > 0 {
		p.PerSec = float64(p.OK) / elapsed.Seconds()
	}
	p.P50, p.P99, p.Max = Percentiles(r.lat)
	return p
}

// Percentiles sorts lat and returns its median, 99th percentile and
// maximum (zero for no samples).
func Percentiles(lat []time.Duration) (p50, p99, maxLat time.Duration) {
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
}

// Run registers the envoys that cfg.State does not already hold, runs
// the check-in phase and measures. An error means the run could not take
// place at all; failed operations are counted in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	var servers []*url.URL
	for _, s := range cfg.Servers {
		u, err := ParseServer(s)
		if err != nil {
			return nil, fmt.Errorf("fleet simulator: %w", err)
		}
		servers = append(servers, u)
	}
	rep := &Report{Envoys: cfg.Envoys, Rate: cfg.Rate}
	for _, u := range servers {
		rep.Servers = append(rep.Servers, u.String())
	}
	st := &State{}
	if cfg.State != nil {
		st.CA = cfg.State.CA
		st.Envoys = slices.Clone(cfg.State.Envoys[:min(len(cfg.State.Envoys), cfg.Envoys)])
	}
	rep.Reused = len(st.Envoys)
	reg := newRegistrar(&cfg, servers)
	defer reg.close()

	if missing := cfg.Envoys - len(st.Envoys); missing > 0 {
		envoys, caDER, phase, err := register(ctx, &cfg, reg, missing)
		rep.Registration = phase
		if err != nil {
			return rep, err
		}
		if st.CA != nil && caDER != nil && string(st.CA) != string(caDER) {
			return rep, errors.New("fleet simulator: the servers answered with another CA than the saved state's: replicas must share one CA")
		}
		if caDER != nil {
			st.CA = caDER
		}
		st.Envoys = append(st.Envoys, envoys...)
	}
	rep.State = st
	if len(st.Envoys) == 0 {
		return rep, errors.New("fleet simulator: no envoy registered; see the first registration error")
	}
	caCert, err := x509.ParseCertificate(st.CA)
	if err != nil {
		return rep, fmt.Errorf("fleet simulator: CA certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)

	var probes []rssProbe
	if len(cfg.ServerPIDs) > 0 {
		for _, pid := range cfg.ServerPIDs {
			probes = append(probes, procRSS(pid))
		}
	} else {
		for i, u := range servers {
			probes = append(probes, metricsRSS(reg.clients[i], u, cfg.AdminToken))
		}
	}
	runCheckins(ctx, &cfg, rep, st.Envoys, roots, probes)
	return rep, nil
}

// register registers n envoys with cfg.RegisterWorkers in flight.
func register(ctx context.Context, cfg *Config, reg *registrar, n int) ([]*Envoy, []byte, Phase, error) {
	var (
		rec     recorder
		next    atomic.Int64
		mu      sync.Mutex
		envoys  = make([]*Envoy, 0, n)
		caDER   []byte
		caClash bool
		wg      sync.WaitGroup
	)
	start := time.Now()
	stop := progress(ctx, cfg, func(el time.Duration) string {
		ok := rec.ok.Load()
		return fmt.Sprintf("registering: %d/%d envoys, %.0f/s, %d errors", ok, n, float64(ok)/el.Seconds(), rec.errs.Load())
	})
	for range min(cfg.RegisterWorkers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			defer func() { rec.success(lat, nil) }()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				host := fmt.Sprintf("%s%d%s", cfg.HostnamePrefix, i, cfg.HostnameSuffix)
				cctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout)
				t0 := time.Now()
				e, ca, err := reg.register(cctx, i%len(reg.servers), host)
				cancel()
				if err != nil {
					rec.fail("http", err)
					continue
				}
				lat = append(lat, time.Since(t0))
				rec.ok.Add(1)
				mu.Lock()
				envoys = append(envoys, e)
				switch {
				case caDER == nil:
					caDER = ca
				case string(caDER) != string(ca):
					caClash = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stop()
	phase := rec.phase(time.Since(start))
	if caClash {
		return envoys, caDER, phase, errors.New("fleet simulator: the servers answered with different CAs: replicas must share one CA (server.tls.ca_file and ca_key_file)")
	}
	if err := ctx.Err(); err != nil {
		return envoys, caDER, phase, fmt.Errorf("fleet simulator: registration: %w", err)
	}
	return envoys, caDER, phase, nil
}

// progress prints line(elapsed) every interval until the returned stop
// is called.
func progress(ctx context.Context, cfg *Config, line func(elapsed time.Duration) string) (stop func()) {
	if cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(cfg.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-t.C:
				fmt.Fprintln(cfg.Progress, line(time.Since(start)))
			}
		}
	}()
	return func() { close(done); <-finished }
}

// pacer hands out send times at a fixed rate to many goroutines.
type pacer struct {
	mu    sync.Mutex
	next  time.Time
	every time.Duration
}

// wait blocks until the next send time; false when ctx ended first. A
// pacer that fell behind by more than a second (the servers could not keep
// up) does not burst to catch up.
func (p *pacer) wait(ctx context.Context) bool {
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now.Add(-time.Second)) {
		p.next = now
	}
	t := p.next
	p.next = p.next.Add(p.every)
	p.mu.Unlock()
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// runCheckins runs the check-in phase and fills in rep.
func runCheckins(ctx context.Context, cfg *Config, rep *Report, envoys []*Envoy, roots *x509.CertPool, probes []rssProbe) {
	lanes := min(cfg.Connections, len(envoys))
	rep.Connections = lanes
	rep.Persistent = lanes == len(envoys)
	rss := make([]RSS, len(probes))
	for i, p := range probes {
		rss[i] = RSS{Server: p.name, Source: p.source}
	}
	cpuStart := make([]float64, len(probes))
	sample := func() {
		for i, p := range probes {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			v, err := p.sample(sctx)
			cancel()
			if err != nil {
				rss[i].Error = err.Error()
				continue
			}
			rss[i].Bytes, rss[i].Error = v.rss, ""
			rss[i].Peak = max(rss[i].Peak, v.rss)
			rss[i].CPUSeconds = v.cpu - cpuStart[i]
		}
	}
	var (
		rec        recorder
		handshakes atomic.Int64
		resumed    atomic.Int64
		wg         sync.WaitGroup
	)
	if cfg.Resume {
		for _, e := range envoys {
			e.sessions = tls.NewLRUClientSessionCache(1)
		}
	}
	var pace *pacer
	if cfg.Rate > 0 {
		pace = &pacer{next: time.Now(), every: time.Duration(float64(time.Second) / cfg.Rate)}
	}
	// Persistent connections are all opened before the clock starts, as
	// a fleet's are: the phase then measures check-ins over idle
	// connections, and the server's RSS includes every connection.
	conns := make([]*grpc.ClientConn, lanes)
	if rep.Persistent {
		connStart := time.Now()
		var next atomic.Int64
		var dw sync.WaitGroup
		for range min(cfg.RegisterWorkers, lanes) {
			dw.Add(1)
			go func() {
				defer dw.Done()
				for ctx.Err() == nil {
					i := int(next.Add(1) - 1)
					if i >= lanes {
						return
					}
					cctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout)
					cc, err := dial(cctx, envoys[i], roots, envoys[i].GRPCAddress, &resumed)
					cancel()
					handshakes.Add(1)
					if err != nil {
						rec.fail("connect", err)
						continue
					}
					conns[i] = cc
				}
			}()
		}
		dw.Wait()
		rep.ConnectElapsed = time.Since(connStart)
	}
	// Resumed sessions are warmed up first: each envoy checks in once, as
	// it did a check-in interval before the phase, and keeps the session.
	if cfg.Resume && !rep.Persistent {
		warmStart := time.Now()
		var next, done atomic.Int64
		stopWarm := progress(ctx, cfg, func(el time.Duration) string {
			return fmt.Sprintf("warming up sessions: %d/%d envoys, %s", done.Load(), len(envoys), el.Round(time.Second))
		})
		var ww sync.WaitGroup
		for range min(cfg.RegisterWorkers, len(envoys)) {
			ww.Add(1)
			go func() {
				defer ww.Done()
				for ctx.Err() == nil {
					i := int(next.Add(1) - 1)
					if i >= len(envoys) {
						return
					}
					e := envoys[i]
					cctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout)
					if cc, err := dial(cctx, e, roots, e.GRPCAddress, nil); err == nil {
						_, _ = Checkin(cctx, cc, e, e.SignCheckin(time.Now()))
						cc.Close()
					}
					cancel()
					done.Add(1)
				}
			}()
		}
		ww.Wait()
		stopWarm()
		rep.WarmUpElapsed = time.Since(warmStart)
	}
	// The CPU clock starts with the phase (after connecting and warming
	// up).
	sample()
	for i := range rss {
		cpuStart[i], rss[i].CPUSeconds, rss[i].Peak = rss[i].CPUSeconds, 0, 0
	}
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	var lastOK int64
	var lastT = start
	stop := progress(runCtx, cfg, func(el time.Duration) string {
		sample()
		ok, now := rec.ok.Load(), time.Now()
		cur := float64(ok-lastOK) / now.Sub(lastT).Seconds()
		lastOK, lastT = ok, now
		line := fmt.Sprintf("checking in: %s/%s, %d ok (%.0f/s now), %d errors", el.Round(time.Second), cfg.Duration, ok, cur, rec.errs.Load())
		for _, r := range rss {
			if r.Error == "" {
				line += fmt.Sprintf(", rss %s %.0f MB", r.Server, float64(r.Bytes)/(1<<20))
			}
		}
		return line
	})
	for l := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lane(runCtx, cfg, envoys, l, lanes, conns[l], roots, pace, &rec, &handshakes, &resumed)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stop()
	sample()
	rep.Checkins = rec.phase(elapsed)
	rep.RPCP50, rep.RPCP99, _ = Percentiles(rec.rpc)
	rep.Handshakes = handshakes.Load()
	rep.Resumed = resumed.Load()
	rep.ServerRSS = rss
	var cpu float64
	for _, r := range rss {
		cpu += r.CPUSeconds
	}
	if rep.Checkins.OK > 0 {
		rep.ServerCPUPerCheckin = time.Duration(cpu / float64(rep.Checkins.OK) * float64(time.Second))
	}
}

// lane drives envoys l, l+lanes, l+2·lanes… in turn over one connection
// slot, starting with cc (envoy l's connection) when not nil: it keeps its connection while the envoy stays the same (a lane
// with one envoy never reconnects) and opens one for the next envoy
// otherwise.
func lane(ctx context.Context, cfg *Config, envoys []*Envoy, l, lanes int, cc *grpc.ClientConn, roots *x509.CertPool, pace *pacer, rec *recorder, handshakes, resumed *atomic.Int64) {
	ccEnvoy := -1
	if cc != nil {
		ccEnvoy = l
	}
	var (
		lat = make([]time.Duration, 0, 64)
		rpc = make([]time.Duration, 0, 64)
	)
	defer func() {
		if cc != nil {
			cc.Close()
		}
		rec.success(lat, rpc)
	}()
	for i := l; ; i += lanes {
		if i >= len(envoys) {
			i = l
		}
		if pace != nil {
			if !pace.wait(ctx) {
				return
			}
		} else if ctx.Err() != nil {
			return
		}
		e := envoys[i]
		// In-flight work finishes after the phase ends, so that the end of
		// the run is not counted as errors.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.CallTimeout)
		t0 := time.Now()
		if ccEnvoy != i {
			if cc != nil {
				cc.Close()
				cc = nil
			}
			var err error
			cc, err = dial(cctx, e, roots, e.GRPCAddress, resumed)
			handshakes.Add(1)
			if err != nil {
				cancel()
				ccEnvoy = -1
				rec.fail("connect", err)
				continue
			}
			ccEnvoy = i
		}
		t1 := time.Now()
		_, err := Checkin(cctx, cc, e, e.SignCheckin(t1))
		cancel()
		if err != nil {
			kind := "verify"
			if s, ok := status.FromError(err); ok {
				kind = s.Code().String()
			}
			rec.fail(kind, err)
			cc.Close()
			cc, ccEnvoy = nil, -1
			continue
		}
		t2 := time.Now()
		lat = append(lat, t2.Sub(t0))
		rpc = append(rpc, t2.Sub(t1))
		rec.ok.Add(1)
	}
}
