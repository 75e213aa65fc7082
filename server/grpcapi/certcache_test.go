package grpcapi

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

// certEnv is a real server (mTLS on 127.0.0.1:0, SQLite store, real CA)
// whose clock the test sets, with chain verifications counted.
type certEnv struct {
	t     *testing.T
	dir   string
	srv   *Server
	addr  string
	ca    *ca.CA
	store *sqlitestore.Store
	clock atomic.Int64 // the server's time, Unix nanoseconds

	mu       sync.Mutex
	verifies int
	errs     []error
}

func newCertEnv(t *testing.T) *certEnv {
	t.Helper()
	ctx := context.Background()
	e := &certEnv{t: t, dir: t.TempDir()}
	st, err := sqlitestore.Open(ctx, filepath.Join(e.dir, "vigo.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := ca.LoadOrCreate(ca.Config{Dir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	e.ca, e.store = c, st
	e.clock.Store(time.Now().UnixNano())
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	srv, err := New(Config{Store: st, CA: c, SigningKey: key, Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	verify := srv.verifyChain
	srv.verifyChain = func(leaf *x509.Certificate, opts x509.VerifyOptions) ([][]*x509.Certificate, error) {
		chains, err := verify(leaf, opts)
		e.mu.Lock()
		e.verifies++
		e.errs = append(e.errs, err)
		e.mu.Unlock()
		return chains, err
	}
	e.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return e
}

func (e *certEnv) now() time.Time { return time.Unix(0, e.clock.Load()) }

// verifications returns how many chain verifications ran and the error of
// the last one.
func (e *certEnv) verifications() (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.errs) == 0 {
		return e.verifies, nil
	}
	return e.verifies, e.errs[len(e.errs)-1]
}

type testEnvoy struct {
	uuid     string
	hostname string
	key      ed25519.PrivateKey
	cert     *x509.Certificate
}

// enroll records an envoy in the store whose current certificate is made
// by sign (ca.SignEnvoy when nil), valid for a day from an hour ago.
func (e *certEnv) enroll(hostname string, sign func(ca.EnvoyParams) (*x509.Certificate, error)) testEnvoy {
	e.t.Helper()
	if sign == nil {
		sign = e.ca.SignEnvoy
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	var b [6]byte
	_, _ = rand.Read(b[:])
	uuid := fmt.Sprintf("00000000-0000-4000-8000-%x", b)
	now := e.now()
	cert, err := sign(ca.EnvoyParams{PublicKey: pub, Hostname: hostname, UUID: uuid, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.store.Enroll(context.Background(), store.EnrollParams{
		Envoy: store.Envoy{UUID: uuid, Hostname: hostname, PublicKey: pub, CertSerial: ca.SerialHex(cert), CertNotAfter: cert.NotAfter, Method: "approved"},
		Now:   now,
	}); err != nil {
		e.t.Fatal(err)
	}
	return testEnvoy{uuid: uuid, hostname: hostname, key: key, cert: cert}
}

func (e *certEnv) clientTLS(v testEnvoy, chain ...*x509.Certificate) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(e.ca.Certificate())
	tc := tls.Certificate{Certificate: [][]byte{v.cert.Raw}, PrivateKey: v.key, Leaf: v.cert}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{tc}}
}

// alert connects as v, presenting v's certificate followed by chain, and
// returns the TLS alert of the server's refusal ("" when accepted).
func (e *certEnv) alert(v testEnvoy, chain ...*x509.Certificate) string {
	e.t.Helper()
	err := agent.ProbeHandshake(context.Background(), e.addr, e.clientTLS(v, chain...))
	var r *agent.HandshakeRefusedError
	if errors.As(err, &r) {
		return r.Alert
	}
	if err != nil {
		e.t.Fatalf("probe: %v", err)
	}
	return ""
}

// checkin opens a new connection as v, checks in once and closes it.
func (e *certEnv) checkin(v testEnvoy) error {
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(e.clientTLS(v))))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = agentpb.NewAgentServiceClient(conn).Checkin(context.Background(), signedCheckin(v, e.now()))
	return err
}

func signedCheckin(v testEnvoy, at time.Time) *agentpb.CheckinRequest {
	r := &agentpb.CheckinRequest{Uuid: v.uuid, Hostname: v.hostname, AgentVersion: "test", Os: "linux", Arch: "amd64",
		TimestampUnixNano: at.UnixNano(), Nonce: make([]byte, agentpb.NonceSize)}
	_, _ = rand.Read(r.Nonce)
	r.Signature = ed25519.Sign(v.key, r.SigningBytes())
	return r
}

// TestClientChainCached: a valid certificate is verified at its first
// handshake only; the validity window is still checked at every
// handshake, and a chain padded with an unrelated certificate is accepted
// but not remembered.
func TestClientChainCached(t *testing.T) {
	e := newCertEnv(t)
	v := e.enroll("web1.example.com", nil)
	for i := range 2 {
		if err := e.checkin(v); err != nil {
			t.Fatalf("check-in %d: %v", i+1, err)
		}
	}
	if n, _ := e.verifications(); n != 1 {
		t.Fatalf("chain verified %d times in two handshakes, want once", n)
	}

	// The leaf with the CA certificate is another chain, verified once.
	for range 2 {
		if got := e.alert(v, e.ca.Certificate()); got != "" {
			t.Fatalf("leaf and CA: alert %q, want none", got)
		}
	}
	if n, _ := e.verifications(); n != 2 {
		t.Fatalf("chain verified %d times, want 2", n)
	}
	// Padded with a certificate the chain does not use: accepted as
	// crypto/tls would, verified every time.
	foreign, err := ca.LoadOrCreate(ca.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got := e.alert(v, foreign.Certificate()); got != "" {
			t.Fatalf("padded chain: alert %q, want none", got)
		}
	}
	if n, _ := e.verifications(); n != 4 {
		t.Fatalf("chain verified %d times, want 4 (padded chains are not remembered)", n)
	}
	if n := e.srv.certs.len(); n != 2 {
		t.Fatalf("cache holds %d chains, want 2", n)
	}

	// Past NotAfter the remembered chain is refused: the entry is dropped
	// and the full verification refuses it as expired.
	e.clock.Store(v.cert.NotAfter.Add(time.Second).UnixNano())
	if got := e.alert(v); got != "bad certificate" {
		t.Fatalf("expired: alert %q, want bad certificate", got)
	}
	n, err := e.verifications()
	var invalid x509.CertificateInvalidError
	if n != 5 || !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Fatalf("expired: %d verifications, last error %v; want 5, expired", n, err)
	}
	// Before NotBefore as well (the other chain is still remembered).
	e.clock.Store(v.cert.NotBefore.Add(-time.Second).UnixNano())
	if got := e.alert(v, e.ca.Certificate()); got != "bad certificate" {
		t.Fatalf("not yet valid: alert %q, want bad certificate", got)
	}
	if n := e.srv.certs.len(); n != 0 {
		t.Fatalf("cache holds %d chains after both were refused, want 0", n)
	}
	// Back within the window: verified again, then remembered again.
	e.clock.Store(time.Now().UnixNano())
	for range 2 {
		if got := e.alert(v); got != "" {
			t.Fatalf("valid again: alert %q, want none", got)
		}
	}
	if n, _ := e.verifications(); n != 7 {
		t.Fatalf("chain verified %d times, want 7", n)
	}
}

// TestClientChainForeignCA: a certificate signed by another CA, for a
// known envoy and its key, is refused every time and never remembered.
func TestClientChainForeignCA(t *testing.T) {
	e := newCertEnv(t)
	v := e.enroll("web2.example.com", nil)
	foreign, err := ca.LoadOrCreate(ca.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := foreign.SignEnvoy(ca.EnvoyParams{PublicKey: v.key.Public().(ed25519.PublicKey), Hostname: "web2.example.com", UUID: v.uuid, NotAfter: e.now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	forged := testEnvoy{uuid: v.uuid, hostname: v.hostname, key: v.key, cert: cert}
	for i := 1; i <= 2; i++ {
		if got := e.alert(forged); got != "bad certificate" {
			t.Fatalf("attempt %d: alert %q, want bad certificate", i, got)
		}
		n, err := e.verifications()
		if _, ok := errors.AsType[x509.UnknownAuthorityError](err); n != i || !ok {
			t.Fatalf("attempt %d: %d verifications, last error %v; want %d, unknown authority", i, n, err, i)
		}
	}
	// With the foreign CA presented as an intermediate too.
	if got := e.alert(forged, foreign.Certificate()); got != "bad certificate" {
		t.Fatalf("with the foreign CA: alert %q, want bad certificate", got)
	}
	if n := e.srv.certs.len(); n != 0 {
		t.Fatalf("cache holds %d chains, want 0", n)
	}
	if got := e.alert(v); got != "" {
		t.Fatalf("genuine certificate: alert %q, want none", got)
	}
}

// TestClientChainNoClientAuth: a certificate from our CA for a known
// envoy, but for server authentication only, is refused every time.
func TestClientChainNoClientAuth(t *testing.T) {
	e := newCertEnv(t)
	caKey, err := ca.ReadPrivateKey(filepath.Join(e.dir, "tls", "ca_key"))
	if err != nil {
		t.Fatal(err)
	}
	serverOnly := func(p ca.EnvoyParams) (*x509.Certificate, error) {
		u, _ := url.Parse(ca.URIPrefix + p.UUID)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: p.Hostname},
			NotBefore:    p.NotBefore,
			NotAfter:     p.NotAfter,
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			DNSNames:     []string{p.Hostname},
			URIs:         []*url.URL{u},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, e.ca.Certificate(), p.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
	v := e.enroll("web3.example.com", serverOnly)
	for i := 1; i <= 2; i++ {
		if got := e.alert(v); got != "bad certificate" {
			t.Fatalf("attempt %d: alert %q, want bad certificate", i, got)
		}
		n, err := e.verifications()
		var invalid x509.CertificateInvalidError
		if n != i || !errors.As(err, &invalid) || invalid.Reason != x509.IncompatibleUsage {
			t.Fatalf("attempt %d: %d verifications, last error %v; want %d, incompatible usage", i, n, err, i)
		}
	}
	if n := e.srv.certs.len(); n != 0 {
		t.Fatalf("cache holds %d chains, want 0", n)
	}
}

// TestClientChainCachedRevoked: a remembered chain does not let a revoked
// envoy in; revocation is judged at every handshake.
func TestClientChainCachedRevoked(t *testing.T) {
	e := newCertEnv(t)
	v := e.enroll("web4.example.com", nil)
	if err := e.checkin(v); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.RevokeEnvoys(context.Background(), []store.Revocation{{UUID: v.uuid, Reason: "stolen", At: e.now()}}); err != nil {
		t.Fatal(err)
	}
	e.srv.EnvoyChanged(v.uuid)
	if got := e.alert(v); got != "bad certificate" {
		t.Fatalf("revoked: alert %q, want bad certificate", got)
	}
	if n, _ := e.verifications(); n != 1 {
		t.Fatalf("chain verified %d times, want once (the refusal is not the chain's)", n)
	}
	if e.srv.certs.len() != 1 {
		t.Fatal("the chain is no longer remembered")
	}
}

func TestCertWindow(t *testing.T) {
	t.Parallel()
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(24 * time.Hour)
	leaf := &x509.Certificate{NotBefore: nb, NotAfter: na}
	root := &x509.Certificate{NotBefore: nb.Add(-time.Hour), NotAfter: na.Add(-time.Hour)}
	w := chainWindow([]*x509.Certificate{leaf, root})
	for _, tt := range []struct {
		at   time.Time
		want bool
	}{
		{nb.Add(-time.Nanosecond), false},
		{nb, true},
		{na.Add(-time.Hour), true},                    // the root's NotAfter, included
		{na.Add(-time.Hour + time.Nanosecond), false}, // past the root
		{na, false},
	} {
		if got := w.contains(tt.at); got != tt.want {
			t.Errorf("contains(%v) = %v, want %v", tt.at, got, tt.want)
		}
	}
	// Fractions of a second (never in parsed certificates) round inwards.
	w = chainWindow([]*x509.Certificate{{NotBefore: nb.Add(time.Millisecond), NotAfter: na.Add(time.Millisecond)}})
	if w.contains(nb.Add(time.Millisecond)) || !w.contains(nb.Add(time.Second)) || w.contains(na.Add(time.Millisecond)) {
		t.Errorf("window %+v does not round inwards", w)
	}
}

func TestChainKey(t *testing.T) {
	t.Parallel()
	a, b := &x509.Certificate{Raw: []byte("ab")}, &x509.Certificate{Raw: []byte("c")}
	ab, c := &x509.Certificate{Raw: []byte("a")}, &x509.Certificate{Raw: []byte("bc")}
	keys := map[certKey]string{}
	for name, chain := range map[string][]*x509.Certificate{
		"a": {a}, "a b": {a, b}, "b a": {b, a}, "ab c": {ab, c}, "a a": {a, a},
	} {
		k := chainKey(chain)
		if other, ok := keys[k]; ok {
			t.Errorf("%q and %q have the same key", name, other)
		}
		keys[k] = name
	}
	if chainKey([]*x509.Certificate{a, b}) != chainKey([]*x509.Certificate{{Raw: []byte("ab")}, {Raw: []byte("c")}}) {
		t.Error("the same chain has two keys")
	}
}

// TestCertCacheBound: the cache never holds more than its bound, drops
// expired entries before valid ones, and is safe for concurrent use.
func TestCertCacheBound(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	valid := certWindow{notBefore: now.Unix() - 60, notAfter: now.Unix() + 3600}
	expired := certWindow{notBefore: now.Unix() - 3600, notAfter: now.Unix() - 60}
	key := func(shard byte, i int) certKey { return certKey{shard, byte(i), byte(i >> 8)} }

	// One shard of 8: expired entries go first.
	c := newCertCache(shardCount * 8)
	for i := range 4 {
		c.add(key(0, i), expired, now)
		c.add(key(0, 100+i), valid, now)
	}
	c.add(key(0, 200), valid, now)
	if n := c.len(); n != 5 {
		t.Fatalf("after an add to a full shard with 4 expired entries: %d entries, want 5", n)
	}
	for i := range 4 {
		if !c.valid(key(0, 100+i), now) {
			t.Errorf("valid entry %d was evicted before expired ones", i)
		}
	}
	// Full of valid entries: some are evicted, the new one is kept.
	for i := range 20 {
		c.add(key(0, 300+i), valid, now)
		if n := c.len(); n > 8 {
			t.Fatalf("shard holds %d entries, bound 8", n)
		}
		if !c.valid(key(0, 300+i), now) {
			t.Fatalf("entry %d just added is missing", i)
		}
	}
	// Re-adding a present key evicts nothing.
	before := c.len()
	c.add(key(0, 319), valid, now)
	if c.len() != before {
		t.Errorf("re-adding a key changed the size from %d to %d", before, c.len())
	}

	// Many random keys from concurrent handshakes: the total bound holds.
	const bound = shardCount * 16
	c = newCertCache(bound)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5000 {
				var k certKey
				_, _ = rand.Read(k[:])
				c.add(k, valid, now)
				c.valid(k, now)
			}
		})
	}
	wg.Wait()
	if n := c.len(); n > bound || n < bound/2 {
		t.Errorf("%d entries after 40,000 adds, want at most %d (and not much less)", n, bound)
	}
	// The default bound is what the package says.
	if c := newCertCache(certCacheSize); c.maxPerShard*shardCount != certCacheSize {
		t.Errorf("bound %d, want %d", c.maxPerShard*shardCount, certCacheSize)
	}
}
