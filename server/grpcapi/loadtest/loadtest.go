// Package loadtest measures the gRPC check-in path: N simulated envoys,
// each with its own certificate and persistent mTLS connection, send
// signed check-ins to a real grpcapi.Server (real SQLite store, batching,
// interceptors, replay cache) and, in the same run, to a baseline: a bare
// gRPC server with the same TLS 1.3 mutual authentication whose handler
// does the same signature work (verify the request with the envoy's key,
// sign the answer) and nothing else. The two alternate in short rounds so
// that a busy machine affects both alike.
//
// Everything listens on 127.0.0.1 and stops by itself after
// Config.Rounds × 2 × Config.Round.
package loadtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/grpcapi"
	"github.com/vigo-enroll/vigo/server/ratelimit"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

// Config sizes a run. Zero values are defaults.
type Config struct {
	// Dir is a scratch folder for the store and CA (required).
	Dir string
	// Envoys is the number of simulated envoys, each with one connection
	// and one request in flight at a time (default 64).
	Envoys int
	// Round is how long each measured round lasts (default 1s).
	Round time.Duration
	// Rounds is how many rounds of each kind run, alternating (default 3).
	Rounds int
	// ServerOnly pre-signs the requests before each round (at most
	// PerEnvoy per envoy and round) and skips verifying the answers, so
	// that the client's own crypto (which real agents do on their own
	// machines) does not share the CPU with the server being measured.
	ServerOnly bool
	// PerEnvoy bounds the requests pre-signed per envoy and round in
	// ServerOnly mode (default 400).
	PerEnvoy int
}

// Result is the outcome of one kind of request.
type Result struct {
	Name     string
	Requests int64
	Errors   int64
	Elapsed  time.Duration
	PerSec   float64
	P50, P99 time.Duration
	// CPU is the process CPU time (server and load generator together)
	// spent during the measured rounds; CPUPerReq divides it by Requests.
	// Unlike PerSec it hardly depends on what else the machine runs.
	CPU       time.Duration
	CPUPerReq time.Duration
	// FirstError is the first error seen, if any.
	FirstError error
}

func (r Result) String() string {
	return fmt.Sprintf("%-8s %8.0f req/s  p50 %-9v p99 %-9v cpu/req %-7v requests %d errors %d",
		r.Name, r.PerSec, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.CPUPerReq.Round(time.Microsecond), r.Requests, r.Errors)
}

// Report is the outcome of Run.
type Report struct {
	Envoys   int
	Checkin  Result
	Baseline Result
}

// Ratio is check-ins per second over baseline requests per second.
func (r Report) Ratio() float64 {
	if r.Baseline.PerSec == 0 {
		return 0
	}
	return r.Checkin.PerSec / r.Baseline.PerSec
}

type simEnvoy struct {
	uuid     string
	hostname string
	key      ed25519.PrivateKey
	cert     tls.Certificate
}

// Run sets up both servers and the envoys, measures, and tears down.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Dir == "" {
		return Report{}, errors.New("load test: no scratch folder")
	}
	if cfg.Envoys <= 0 {
		cfg.Envoys = 64
	}
	if cfg.Round <= 0 {
		cfg.Round = time.Second
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 3
	}
	if cfg.PerEnvoy <= 0 {
		cfg.PerEnvoy = 400
	}
	st, err := sqlitestore.Open(ctx, filepath.Join(cfg.Dir, "load.db"), sqlitestore.Options{})
	if err != nil {
		return Report{}, fmt.Errorf("load test: %w", err)
	}
	defer st.Close()
	authority, err := ca.LoadOrCreate(ca.Config{Dir: cfg.Dir})
	if err != nil {
		return Report{}, fmt.Errorf("load test: %w", err)
	}
	_, signKey, _ := ed25519.GenerateKey(rand.Reader)

	envoys := make([]simEnvoy, cfg.Envoys)
	keys := make(map[string]ed25519.PublicKey, cfg.Envoys)
	now := time.Now()
	for i := range envoys {
		pub, key, _ := ed25519.GenerateKey(rand.Reader)
		uuid := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		cert, err := authority.SignEnvoy(ca.EnvoyParams{PublicKey: pub, Hostname: fmt.Sprintf("load%d.example.com", i), UUID: uuid, NotAfter: now.Add(24 * time.Hour)})
		if err != nil {
			return Report{}, fmt.Errorf("load test: %w", err)
		}
		if _, err := st.Enroll(ctx, store.EnrollParams{
			Envoy: store.Envoy{UUID: uuid, Hostname: cert.Subject.CommonName, PublicKey: pub, CertSerial: ca.SerialHex(cert), CertNotAfter: cert.NotAfter, Method: "approved"},
			Now:   now,
		}); err != nil {
			return Report{}, fmt.Errorf("load test: %w", err)
		}
		envoys[i] = simEnvoy{uuid: uuid, hostname: cert.Subject.CommonName, key: key, cert: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}
		keys[uuid] = pub
	}

	// Each simulated envoy checks in as fast as it can: no per-envoy limit.
	srv, err := grpcapi.New(grpcapi.Config{Store: st, CA: authority, SigningKey: signKey, PerEnvoy: ratelimit.Limit{PerSecond: -1}})
	if err != nil {
		return Report{}, fmt.Errorf("load test: %w", err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Report{}, fmt.Errorf("load test: %w", err)
	}
	go srv.Serve(ln)

	base := newBaseline(authority, signKey, keys)
	defer base.grpc.Stop()
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Report{}, fmt.Errorf("load test: %w", err)
	}
	go base.grpc.Serve(bln)

	roots := x509.NewCertPool()
	roots.AddCert(authority.Certificate())
	serverPub := signKey.Public().(ed25519.PublicKey)
	dial := func(addr string, e simEnvoy) (*grpc.ClientConn, error) {
		conf := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{e.cert}}
		return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	}
	var checkinClients, baseClients []agentpb.AgentServiceClient
	for _, e := range envoys {
		for _, c := range []struct {
			addr string
			to   *[]agentpb.AgentServiceClient
		}{{ln.Addr().String(), &checkinClients}, {bln.Addr().String(), &baseClients}} {
			conn, err := dial(c.addr, e)
			if err != nil {
				return Report{}, fmt.Errorf("load test: %w", err)
			}
			defer conn.Close()
			*c.to = append(*c.to, agentpb.NewAgentServiceClient(conn))
		}
	}

	rep := Report{Envoys: cfg.Envoys, Checkin: Result{Name: "checkin"}, Baseline: Result{Name: "baseline"}}
	var checkinLat, baseLat []time.Duration
	// Warm up both (handshakes, pools) before measuring.
	warm := cfg
	warm.Round, warm.PerEnvoy = 200*time.Millisecond, 20
	runRound(ctx, warm, envoys, checkinClients, serverPub, &Result{}, new([]time.Duration))
	runRound(ctx, warm, envoys, baseClients, serverPub, &Result{}, new([]time.Duration))
	for range cfg.Rounds {
		runRound(ctx, cfg, envoys, baseClients, serverPub, &rep.Baseline, &baseLat)
		runRound(ctx, cfg, envoys, checkinClients, serverPub, &rep.Checkin, &checkinLat)
	}
	finish(&rep.Checkin, checkinLat)
	finish(&rep.Baseline, baseLat)
	return rep, nil
}

func finish(r *Result, lat []time.Duration) {
	if r.Elapsed > 0 {
		r.PerSec = float64(r.Requests) / r.Elapsed.Seconds()
	}
	if r.Requests > 0 {
		r.CPUPerReq = r.CPU / time.Duration(r.Requests)
	}
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	r.P50 = lat[len(lat)/2]
	r.P99 = lat[len(lat)*99/100]
}

func signed(e simEnvoy) *agentpb.CheckinRequest {
	req := &agentpb.CheckinRequest{Uuid: e.uuid, Hostname: e.hostname, AgentVersion: "load", Os: "linux", Arch: "amd64",
		TimestampUnixNano: time.Now().UnixNano()}
	req.Sign(e.key)
	return req
}

// runRound drives every envoy for cfg.Round, one request in flight per
// envoy.
func runRound(ctx context.Context, cfg Config, envoys []simEnvoy, clients []agentpb.AgentServiceClient, serverPub ed25519.PublicKey, r *Result, lat *[]time.Duration) {
	var pre [][]*agentpb.CheckinRequest
	if cfg.ServerOnly {
		pre = make([][]*agentpb.CheckinRequest, len(envoys))
		for i, e := range envoys {
			for range cfg.PerEnvoy {
				pre[i] = append(pre[i], signed(e))
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Round)
	defer cancel()
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		requests atomic.Int64
		errs     atomic.Int64
	)
	start, cpu0 := time.Now(), processCPU()
	for i := range envoys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, c := envoys[i], clients[i]
			local := make([]time.Duration, 0, 4096)
			for n := 0; ctx.Err() == nil; n++ {
				var req *agentpb.CheckinRequest
				if cfg.ServerOnly {
					if n == len(pre[i]) {
						break
					}
					req = pre[i][n]
				} else {
					req = signed(e)
				}
				t0 := time.Now()
				resp, err := c.Checkin(context.WithoutCancel(ctx), req)
				if err == nil && !cfg.ServerOnly {
					err = agentpb.VerifyResponse(serverPub, req, resp)
				}
				if err != nil {
					errs.Add(1)
					mu.Lock()
					if r.FirstError == nil {
						r.FirstError = err
					}
					mu.Unlock()
					continue
				}
				local = append(local, time.Since(t0))
				requests.Add(1)
			}
			mu.Lock()
			*lat = append(*lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.Elapsed += time.Since(start)
	r.CPU += processCPU() - cpu0
	r.Requests += requests.Load()
	r.Errors += errs.Load()
}

// baseline is a bare AgentService: mTLS, verify, sign, nothing else.
type baseline struct {
	agentpb.UnimplementedAgentServiceServer
	grpc *grpc.Server
	key  ed25519.PrivateKey
	keys map[string]ed25519.PublicKey
}

func newBaseline(authority *ca.CA, key ed25519.PrivateKey, keys map[string]ed25519.PublicKey) *baseline {
	cert := authority.ServerTLSCertificate()
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: authority.Pool(), SessionTicketsDisabled: true,
	}
	b := &baseline{key: key, keys: keys}
	b.grpc = grpc.NewServer(grpc.Creds(credentials.NewTLS(conf)))
	agentpb.RegisterAgentServiceServer(b.grpc, b)
	return b
}

func (b *baseline) Checkin(_ context.Context, req *agentpb.CheckinRequest) (*agentpb.CheckinResponse, error) {
	pub := b.keys[req.GetUuid()]
	if pub == nil || !ed25519.Verify(pub, req.SigningBytes(), req.GetSignature()) {
		return nil, status.Error(codes.Unauthenticated, "bad signature")
	}
	resp := &agentpb.CheckinResponse{Uuid: req.GetUuid(), RequestNonce: req.GetNonce(), ServerTimeUnixNano: time.Now().UnixNano(), NextCheckinMillis: 60000}
	resp.Signature = ed25519.Sign(b.key, resp.SigningBytes())
	return resp, nil
}
