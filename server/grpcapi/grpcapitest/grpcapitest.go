// Package grpcapitest runs a real gRPC check-in server for tests: real CA,
// real SQLite store in t.TempDir(), mTLS on 127.0.0.1:0, and the real
// HTTPS API (enroll.Enroller behind httpapi) with a policy that approves
// every hostname, so that agents register, rebootstrap and replace exactly
// as against vigosrv.
package grpcapitest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/enroll"
	"github.com/vigo-enroll/vigo/server/grpcapi"
	"github.com/vigo-enroll/vigo/server/httpapi"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

// Env is a real server: gRPC with mTLS on 127.0.0.1:0, the HTTPS API with
// the real enroller, a real SQLite store and a real CA.
type Env struct {
	t testing.TB
	// Store (which tells the gRPC server of every envoy it changes), CA,
	// Key (response signing key), Server, Addr (gRPC) and HTTPS (the HTTPS
	// API) are the running parts.
	Store  *store.Notifying
	CA     *ca.CA
	Key    ed25519.PrivateKey
	Server *grpcapi.Server
	Addr   string
	HTTPS  *httptest.Server
	// Registrations counts requests that reached the register route.
	Registrations atomic.Int64

	cfg grpcapi.Config
	api atomic.Pointer[httpapi.API] // remade by Restart, which changes Addr
}

// approveAll is the policy of every Env: any hostname enrolls, and anyone
// may replace an enrolled one (replace: "any", the default).
const approveAll = "package policy\n\napproved: [\"*\"]\n"

// Options configure New.
type Options struct {
	AgentVersion  func(os, arch string) (string, string, bool)
	TargetVersion func() string
	SigningKey    ed25519.PrivateKey
	IdleTimeout   time.Duration
	Registerer    prometheus.Registerer
	// Config, when set, edits the server's configuration last.
	Config func(*grpcapi.Config)
}

// New starts the servers; t.Cleanup stops them.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "vigo.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ns := &store.Notifying{Store: st}
	c, err := ca.LoadOrCreate(ca.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	key := o.SigningKey
	if key == nil {
		_, key, _ = ed25519.GenerateKey(rand.Reader)
	}
	cfg := grpcapi.Config{Store: ns, CA: c, SigningKey: key, AgentVersion: o.AgentVersion, TargetVersion: o.TargetVersion, Interval: 30 * time.Second,
		IdleTimeout: o.IdleTimeout, Registerer: o.Registerer}
	if o.Config != nil {
		o.Config(&cfg)
	}
	e := &Env{t: t, Store: ns, CA: c, Key: key, cfg: cfg}
	e.serve()
	e.HTTPS = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/bootstrap/register" {
			e.Registrations.Add(1)
		}
		e.api.Load().ServeHTTP(w, r)
	}))
	cert := c.ServerTLSCertificate()
	cert.Certificate = append([][]byte{cert.Certificate[0]}, c.Certificate().Raw)
	e.HTTPS.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	e.HTTPS.StartTLS()
	t.Cleanup(e.HTTPS.Close)
	return e
}

// serve starts a gRPC server with e.cfg on a new loopback listener.
func (e *Env) serve() {
	t := e.t
	srv, err := grpcapi.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	e.Server, e.Addr = srv, ln.Addr().String()
	e.Store.Changed = srv.EnvoyChanged

	pol, err := policy.Load([]policy.File{{Name: "policy.cue", Data: []byte(approveAll)}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	enr, err := enroll.New(enroll.Config{
		Store: e.Store, CA: e.CA, Policy: func() *policy.Policy { return pol },
		GRPCAddress: e.Addr, CheckinInterval: 30 * time.Second, ServerPublicKey: e.Key.Public().(ed25519.PublicKey),
	})
	if err != nil {
		t.Fatal(err)
	}
	ops, err := admin.New(admin.Config{Store: e.Store})
	if err != nil {
		t.Fatal(err)
	}
	// Only the open routes are used: no admin credential is valid.
	api, err := httpapi.New(httpapi.Config{Enroller: enr, Store: e.Store, Policy: func() *policy.Policy { return pol },
		Ops: ops, Auth: admin.Tokens{Server: admin.ServerToken{Hash: sha256.Sum256(nil)}}})
	if err != nil {
		t.Fatal(err)
	}
	e.api.Store(api)
}

// Restart stops the gRPC server (writing its batched check-ins, as a
// graceful stop does) and starts a new one on the same store, CA and key,
// as a process restart would: nothing in memory survives. Addr changes;
// clients made before talk to the old address. The new server registers
// no metrics.
func (e *Env) Restart() {
	e.t.Helper()
	e.Server.Close()
	e.cfg.Registerer = nil
	e.serve()
}

// PubPEM encodes an Ed25519 public key as PEM PKIX.
func PubPEM(t testing.TB, k ed25519.PublicKey) string {
	return string(pemkey.MarshalPublic(k))
}

// Envoy is one enrolled envoy: its store record and its agent folder.
type Envoy struct {
	UUID, Hostname, Dir string
	Key                 ed25519.PrivateKey
	Cert                *x509.Certificate
}

// Config calls fn with the configuration the server was made with (its
// store, CA and keys), for tests that build a server of their own.
func (e *Env) Config(fn func(grpcapi.Config)) { fn(e.cfg) }

// Enroll creates an envoy with store.Enroll + ca.SignEnvoy and writes its
// agent folder. The certificate runs from notBefore to notAfter.
func (e *Env) Enroll(hostname string, notBefore, notAfter time.Time) Envoy {
	e.t.Helper()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	uuid := enroll.NewUUID()
	cert, err := e.CA.SignEnvoy(ca.EnvoyParams{PublicKey: pub, Hostname: hostname, UUID: uuid, NotBefore: notBefore, NotAfter: notAfter})
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = e.Store.Enroll(context.Background(), store.EnrollParams{
		Envoy: store.Envoy{UUID: uuid, Hostname: hostname, PublicKey: pub, CertSerial: ca.SerialHex(cert),
			CertNotAfter: cert.NotAfter, OS: "linux", Arch: "amd64", Method: "approved", Rule: "*"},
		Now:   time.Now(),
		Audit: store.AuditEvent{Type: store.AuditRegistration, Result: "allowed", EnvoyUUID: uuid, Hostname: hostname},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	dir := filepath.Join(e.t.TempDir(), "vigo-envoy")
	f := agent.File{
		ServerURL: e.HTTPS.URL, GRPCAddress: e.Addr, ServerName: "127.0.0.1", UUID: uuid, Hostname: hostname,
		CheckinInterval: "30s", ServerPublicKey: PubPEM(e.t, e.Key.Public().(ed25519.PublicKey)), RegisteredAt: time.Now(),
	}
	if err := agent.WriteEnrollment(dir, f, key, cert, e.CA.Certificate()); err != nil {
		e.t.Fatal(err)
	}
	return Envoy{UUID: uuid, Hostname: hostname, Dir: dir, Key: key, Cert: cert}
}

// EnrollNow enrolls with a certificate valid from an hour ago for a day.
func (e *Env) EnrollNow(hostname string) Envoy {
	now := time.Now()
	return e.Enroll(hostname, now.Add(-time.Hour), now.Add(24*time.Hour))
}

// Agent returns an agent for v; t.Cleanup closes it.
func (e *Env) Agent(v Envoy, cfg agent.Config) *agent.Agent {
	e.t.Helper()
	cfg.Dir = v.Dir
	a, err := agent.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { a.Close() })
	return a
}

// ClientTLS returns a client TLS configuration presenting cert and key.
func (e *Env) ClientTLS(cert *x509.Certificate, key ed25519.PrivateKey) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(e.CA.Certificate())
	return &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
	}
}

// HandshakeAlert connects with cert and returns the TLS alert of the
// server's refusal ("" when accepted).
func (e *Env) HandshakeAlert(cert *x509.Certificate, key ed25519.PrivateKey) string {
	e.t.Helper()
	err := agent.ProbeHandshake(context.Background(), e.Addr, e.ClientTLS(cert, key))
	var r *agent.HandshakeRefusedError
	if errors.As(err, &r) {
		return r.Alert
	}
	if err != nil {
		e.t.Fatalf("probe: %v", err)
	}
	return ""
}

// RawClient is a gRPC client presenting cert/key, for hand-made requests.
func (e *Env) RawClient(cert *x509.Certificate, key ed25519.PrivateKey) agentpb.AgentServiceClient {
	e.t.Helper()
	conn, err := grpc.NewClient(e.Addr, grpc.WithTransportCredentials(credentials.NewTLS(e.ClientTLS(cert, key))))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return agentpb.NewAgentServiceClient(conn)
}

// SignedRequest makes a valid signed check-in for v at time at.
func SignedRequest(v Envoy, at time.Time) *agentpb.CheckinRequest {
	r := &agentpb.CheckinRequest{Uuid: v.UUID, Hostname: v.Hostname, AgentVersion: "test", Os: "linux", Arch: "amd64",
		TimestampUnixNano: at.UnixNano()}
	r.Sign(v.Key)
	return r
}

// IsRevoked returns the *agent.RevokedError in err's chain.
func IsRevoked(err error) (*agent.RevokedError, bool) {
	var r *agent.RevokedError
	ok := errors.As(err, &r)
	return r, ok
}
