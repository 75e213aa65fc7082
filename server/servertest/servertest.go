// Package servertest starts a real Vigo Enroll server on loopback for
// tests, with a temporary data folder, and offers a client that talks to it
// over real HTTPS.
package servertest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/store/storetest"
)

// Options tune a test server.
type Options struct {
	// DataDir reuses a data folder (for restart tests); "" = a new temp folder.
	DataDir string
	// Policy is written as policy.cue in a policy folder when PolicyDir is "".
	Policy string
	// PolicyDir is used as policy.dir as is.
	PolicyDir string
	// Config edits the configuration before start.
	Config func(*server.Config)
	// Verbose sends the server log to the test log.
	Verbose bool
	// HTTPSRoots verify the server's HTTPS certificate (default: the
	// server's CA); for a server with an operator's certificate.
	HTTPSRoots *x509.CertPool
	// Log, when set, receives the server log as text (instead of Verbose).
	Log io.Writer
}

// Instance is a running server.
type Instance struct {
	*server.Server
	URL        string
	DataDir    string
	PolicyDir  string
	AdminToken string
	Client     *http.Client
	cancel     context.CancelFunc
	done       chan error
}

// DefaultPolicy trusts *.trusted.test from loopback and approves *.approved.test.
const DefaultPolicy = `package policy

trusted_enrollment: [{name: "loopback", pattern: "*.trusted.test", cidrs: ["127.0.0.0/8", "::1/128"]}]
approved: ["*.approved.test"]
revocations: [{hostname: "gone.approved.test", reason: "decommissioned"}]
`

// Start starts a server and stops it when the test ends.
func Start(t testing.TB, o Options) *Instance {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.PolicyDir == "" {
		o.PolicyDir = filepath.Join(t.TempDir(), "policy")
		if o.Policy == "" {
			o.Policy = DefaultPolicy
		}
		if err := os.MkdirAll(o.PolicyDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(o.PolicyDir, "policy.cue"), []byte(o.Policy), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &server.Config{}
	cfg.Server.APIListen = "127.0.0.1:0"
	cfg.Server.GRPCListen = "127.0.0.1:0"
	cfg.Server.Hostname = "127.0.0.1"
	cfg.Server.DataDir = o.DataDir
	cfg.Server.Replica = "test"
	cfg.Policy.Dir = o.PolicyDir
	// Rate limits off (tests send bursts from one address); the tests of
	// the limits turn them on.
	cfg.Bootstrap.RateLimit.PerSecond = -1
	cfg.Bootstrap.RateLimit.TokenChecksPerSecond = -1
	cfg.Bootstrap.CheckinRateLimit.PerSecond = -1
	if o.Config != nil {
		o.Config(cfg)
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	switch {
	case o.Log != nil:
		logger = slog.New(slog.NewTextHandler(o.Log, nil))
	case o.Verbose:
		logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatalf("start server: %v", err)
	}
	in := &Instance{Server: srv, DataDir: o.DataDir, PolicyDir: o.PolicyDir, cancel: cancel, done: make(chan error, 1)}
	in.URL = "https://" + srv.APIAddr().String()
	tok, err := os.ReadFile(srv.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	in.AdminToken = strings.TrimSpace(string(tok))
	roots := o.HTTPSRoots
	if roots == nil {
		roots = srv.CAPool()
	}
	in.Client = &http.Client{Timeout: 3 * time.Minute, // bcrypt under -race on a busy machine is slow
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"},
			MaxIdleConnsPerHost: 64,
		}}
	go func() { in.done <- srv.Run(ctx) }()
	t.Cleanup(in.Stop)
	in.waitReady(t)
	return in
}

func (in *Instance) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := in.Client.Get(in.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("server did not become ready within 20s")
}

// Stop stops the server and waits for it (idempotent).
func (in *Instance) Stop() {
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	<-in.done
	in.Server.Close()
	in.Client.CloseIdleConnections()
}

// Do sends a request with an optional JSON body; admin adds the admin token.
// It returns the status code and the body.
func (in *Instance) Do(t testing.TB, method, path string, body any, admin bool) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, in.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if admin {
		req.Header.Set("Authorization", "Bearer "+in.AdminToken)
	}
	resp, err := in.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// Token creates a token for pattern and returns the full token.
func (in *Instance) Token(t testing.TB, pattern, ttl string) apiv1.TokenCreated {
	t.Helper()
	code, body := in.Do(t, "POST", "/api/v1/tokens", apiv1.TokenCreateRequest{Pattern: pattern, TTL: ttl}, true)
	if code != http.StatusCreated {
		t.Fatalf("create token: HTTP %d %s", code, body)
	}
	var out apiv1.TokenCreated
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Identity is a host key with its registration request.
type Identity struct {
	Key ed25519.PrivateKey
	Req apiv1.RegisterRequest
}

// NewIdentity makes a key and a CSR for hostname.
func NewIdentity(t testing.TB, hostname string) Identity {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Identity{Key: priv, Req: RequestFor(t, hostname, pub, priv, hostname)}
}

// RequestFor builds a register request whose CSR has common name cn.
func RequestFor(t testing.TB, hostname string, pub ed25519.PublicKey, csrKey ed25519.PrivateKey, cn string) apiv1.RegisterRequest {
	t.Helper()
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, csrKey)
	if err != nil {
		t.Fatal(err)
	}
	return apiv1.RegisterRequest{
		Hostname: hostname, OS: "linux", Arch: "amd64",
		PublicKey: string(pemkey.MarshalPublic(pub)),
		CSR:       string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
	}
}

// Register posts a registration and returns the status and body.
func (in *Instance) Register(t testing.TB, req apiv1.RegisterRequest) (int, []byte) {
	t.Helper()
	return in.Do(t, "POST", "/api/v1/bootstrap/register", req, false)
}

// ErrorOf decodes an error body.
func ErrorOf(body []byte) string {
	var e apiv1.Error
	_ = json.Unmarshal(body, &e)
	return e.Error
}

// GRPCPort is the port of the gRPC listener.
func (in *Instance) GRPCPort() int { return in.GRPCAddr().(*net.TCPAddr).Port }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// PostgresSchema returns the DSN of the test PostgreSQL server with
// search_path set to a new, empty schema dropped when the test ends; it
// skips the test when VIGO_TEST_POSTGRES_DSN is unset.
func PostgresSchema(t testing.TB) string { return storetest.PostgresSchema(t) }

// StartReplicas starts n servers as replicas of one deployment, the way
// README.md ("Several servers") documents it: one PostgreSQL database (a
// new schema of VIGO_TEST_POSTGRES_DSN; the test is skipped without it),
// one CA shared through server.tls.ca_file and ca_key_file, one admin
// token file, the same response signing key in every data folder, and one
// policy folder that every replica watches. Each replica has its own data
// folder, listeners and server.replica name ("replica-1", "replica-2"…).
// o.DataDir must be empty; o.Config runs after these settings.
func StartReplicas(t testing.TB, n int, o Options) []*Instance {
	t.Helper()
	if o.DataDir != "" {
		t.Fatal("StartReplicas: Options.DataDir must be empty")
	}
	dsn := PostgresSchema(t)
	shared := t.TempDir()
	if o.PolicyDir == "" {
		o.PolicyDir = filepath.Join(shared, "policy")
		if o.Policy == "" {
			o.Policy = DefaultPolicy
		}
		if err := os.MkdirAll(o.PolicyDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(o.PolicyDir, "policy.cue"), []byte(o.Policy), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out []*Instance
	for i := range n {
		ro := o
		ro.DataDir = t.TempDir()
		ro.Config = func(c *server.Config) {
			c.Server.Replica = fmt.Sprintf("replica-%d", i+1)
			c.Database.Driver = "postgres"
			c.Database.DSN = dsn
			c.Server.TLS.CAFile = filepath.Join(shared, "ca.pem")
			c.Server.TLS.CAKeyFile = filepath.Join(shared, "ca_key.pem")
			c.Admin.TokenFile = filepath.Join(shared, "admin.token")
			// Agents pin the response signing key at registration:
			// every replica holds the same one.
			c.Server.TLS.ResponseSigningKeyFile = filepath.Join(shared, "response_signing_key")
			if o.Config != nil {
				o.Config(c)
			}
		}
		out = append(out, Start(t, ro))
	}
	return out
}

// PublicCA is a second CA standing in for a public one (Let's Encrypt) in
// tests of a server with an operator's HTTPS certificate: it writes a CA
// and a server certificate for localhost and 127.0.0.1 under a new folder.
type PublicCA struct {
	CertFile, KeyFile string // the server certificate and its key
	CAFile            string // the CA certificate, as curl --cacert takes it
	Pool              *x509.CertPool
	Leaf              *x509.Certificate
}

// NewPublicCA makes a PublicCA (the same code as the server's own CA).
func NewPublicCA(t testing.TB) PublicCA {
	t.Helper()
	dir := t.TempDir()
	c, err := ca.LoadOrCreate(ca.Config{Dir: dir, Hostnames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	tc := c.ServerTLSCertificate()
	leaf, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return PublicCA{CertFile: filepath.Join(dir, "tls", "cert"), KeyFile: filepath.Join(dir, "tls", "key"),
		CAFile: filepath.Join(dir, "tls", "ca"), Pool: c.Pool(), Leaf: leaf}
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and a reader:
// for a server's log, or a command's output read while it runs.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
