// Package grpcapi serves the agent check-in protocol (schemas/agentpb) over
// gRPC with mutual TLS.
//
// Authentication happens twice. At the TLS handshake the client certificate
// must chain to the CA and, in VerifyConnection, belong to an active envoy
// and be that envoy's current certificate. Per request the auth interceptor
// checks the same against the current state (a connection may outlive a
// revocation or renewal) and puts the Envoy in the request context.
//
// The hot path reads no database: envoys are cached in a directory that
// EnvoyChanged invalidates at once and a periodic refresh keeps in step
// with other replicas (see Config.RefreshInterval for the staleness bound);
// check-ins are recorded in batches (Config.FlushInterval).
package grpcapi

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/ratelimit"
	"github.com/vigo-enroll/vigo/server/store"
)

// Config configures the gRPC server. Zero values are defaults unless said
// otherwise.
type Config struct {
	// Store is the server's store (required).
	Store store.Store
	// CA verifies client certificates, provides the server certificate and
	// signs renewed certificates (required).
	CA *ca.CA
	// SigningKey signs check-in responses; agents pin its public key at
	// registration (required).
	SigningKey ed25519.PrivateKey
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Interval is the check-in interval told to agents (default 1m).
	Interval time.Duration
	// Now returns the current time (default time.Now). It is also the
	// clock of certificate verification.
	Now func() time.Time
	// FlushInterval is how often batched check-ins are written (default 1s).
	FlushInterval time.Duration
	// RefreshInterval is how often cached envoys are re-read from the
	// store to see changes made by other replicas (default 10s). It bounds
	// how long a revocation or flag set on another replica takes to apply
	// here; EnvoyChanged applies changes made through this replica at once.
	RefreshInterval time.Duration
	// MaxClockSkew is how far a check-in timestamp may be from the server's
	// clock (default 5m).
	MaxClockSkew time.Duration
	// PerEnvoy bounds the requests of each envoy (a token bucket; default
	// 1 per second, burst 20: an agent checks in once per Interval).
	// Over it the envoy is refused with RESOURCE_EXHAUSTED; other envoys
	// are not affected. A negative PerSecond disables the bound.
	PerEnvoy ratelimit.Limit
	// CertValidity returns the lifetime of a renewed certificate (the
	// active policy's cert_validity); nil keeps the lifetime of the
	// certificate being renewed.
	CertValidity func() time.Duration
	// Registerer registers the server's metrics; nil registers none.
	Registerer prometheus.Registerer
	// AgentVersion returns the agent version served for os/arch and its
	// SHA-256; nil means updates are never offered.
	AgentVersion func(os, arch string) (version, sha256 string, ok bool)
	// DrainTimeout bounds how long Run waits, at shutdown, for check-ins in
	// flight before it closes the remaining connections (default 10s).
	DrainTimeout time.Duration
	// IdleTimeout closes connections idle for longer (0 keeps them until
	// MaxConnectionAge). Below the check-in interval, every check-in opens
	// a new connection: server memory stays flat however large the fleet,
	// at the cost of a TLS handshake per check-in.
	IdleTimeout time.Duration
	// SharedNonces also records every check-in nonce in the store
	// (store.SeenNonce), so that a check-in replayed to another replica
	// sharing the database is refused. Off for a single server.
	SharedNonces bool
	// TargetVersion returns the agent version every envoy should run (the
	// server's agent.version), "" for none. An envoy's own update flag
	// takes precedence. Nil means none.
	TargetVersion func() string
	// Replica names this server in audit events.
	Replica string
	// KeyExchange is the TLS key exchange of check-in handshakes:
	// KeyExchangeHybrid (the default) or KeyExchangeX25519.
	KeyExchange KeyExchange
}

// KeyExchange is the key exchange of the check-in listener's handshakes.
type KeyExchange string

const (
	// KeyExchangeHybrid prefers X25519MLKEM768, a hybrid of X25519 and
	// the post-quantum ML-KEM-768 (Go's default), with X25519 for
	// clients that offer only that: sessions recorded today stay secret
	// from a future quantum computer.
	KeyExchangeHybrid KeyExchange = "hybrid"
	// KeyExchangeX25519 uses X25519 alone: cheaper per handshake, not
	// post-quantum.
	KeyExchangeX25519 KeyExchange = "x25519"
)

// curves returns the CurvePreferences of k (nil: Go's default).
func (k KeyExchange) curves() []tls.CurveID {
	if k == KeyExchangeX25519 {
		return []tls.CurveID{tls.X25519}
	}
	return nil
}

// Server is the gRPC check-in server.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	now     func() time.Time
	grpc    *grpc.Server
	dir     *directory
	tickets *ticketKeys
	guard   *guard
	batch   *checkinBatcher
	m       *metrics
	tls     *tls.Config
	pubKey  ed25519.PublicKey
	cancel  context.CancelFunc // stops the background loops, once started
	wg      sync.WaitGroup
	startMu sync.Once
	closeMu sync.Once

	// trust holds the only roots client chains may end at: a private
	// copy of the CA pool, so that nothing can change what certs
	// remembers verified against, replaced by TrustChanged.
	trust atomic.Pointer[trustSnapshot]
	// serverCert is the certificate presented, replaced by TrustChanged.
	serverCert atomic.Pointer[tls.Certificate]
	// trustBundle is the trusted CAs (DER) handed to agents, and its digest.
	trustBundle atomic.Pointer[bundle]
	// certs remembers verified client chains; nil verifies every chain.
	certs *certCache
	// verifyChain is (*x509.Certificate).Verify; tests count its calls.
	verifyChain func(*x509.Certificate, x509.VerifyOptions) ([][]*x509.Certificate, error)
}

// New builds the server and starts its background loops (batched writes,
// directory refresh); Close stops them.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("new grpc server: no store")
	case cfg.CA == nil:
		return nil, errors.New("new grpc server: no CA")
	case len(cfg.SigningKey) != ed25519.PrivateKeySize:
		return nil, errors.New("new grpc server: no Ed25519 signing key")
	case cfg.KeyExchange != "" && cfg.KeyExchange != KeyExchangeHybrid && cfg.KeyExchange != KeyExchangeX25519:
		return nil, fmt.Errorf("new grpc server: key exchange %q: must be %s or %s", cfg.KeyExchange, KeyExchangeHybrid, KeyExchangeX25519)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 10 * time.Second
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = 5 * time.Minute
	}
	if cfg.PerEnvoy == (ratelimit.Limit{}) {
		cfg.PerEnvoy = ratelimit.Limit{PerSecond: 1, Burst: 20}
	}
	s := &Server{
		cfg:     cfg,
		logger:  cfg.Logger.With("component", "grpcapi"),
		now:     cfg.Now,
		dir:     newDirectory(cfg.Store, cfg.Now),
		tickets: newTicketKeys(TicketKeyPeriod, cfg.Now),
		guard:   newGuard(cfg.PerEnvoy),
		pubKey:  cfg.SigningKey.Public().(ed25519.PublicKey),
	}
	m, err := newMetrics(cfg.Registerer, s.guard)
	if err != nil {
		return nil, fmt.Errorf("new grpc server: %w", err)
	}
	s.m = m
	s.batch = &checkinBatcher{store: cfg.Store, logger: s.logger, m: m, pending: make(map[string]store.Checkin)}

	s.certs = newCertCache(certCacheSize)
	s.verifyChain = (*x509.Certificate).Verify
	s.loadTrust(1)

	s.tls = &tls.Config{
		// TLS 1.3 only: every agent is ours and speaks it; it encrypts the
		// client certificate and removes the legacy renegotiation and
		// cipher choices.
		MinVersion: tls.VersionTLS13,
		// The server certificate of the signing CA; a CA rotation
		// replaces it (TrustChanged) without a restart. The chain ends
		// with the CA, so an agent pinning the CA fingerprint can find it.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.serverCert.Load(), nil },
		// The client certificate is the envoy's identity: required, and
		// verified against our CA only (not the system roots), in
		// verifyConnection rather than by crypto/tls, so that a chain
		// verified once is not verified again at every handshake (see
		// certCache). RequireAnyClientCert still refuses a handshake
		// without a certificate and still checks the client's
		// CertificateVerify signature, its proof that it holds the
		// certificate's key: readClientCertificate in
		// crypto/tls/handshake_server_tls13.go calls
		// verifyHandshakeSignature with the leaf's public key whatever
		// ClientAuth is, right after VerifyConnection. One difference a
		// client sees: crypto/tls sends every VerifyConnection error as
		// a "bad certificate" alert, where its own verification sent
		// "unknown certificate authority" or "expired certificate".
		ClientAuth: tls.RequireAnyClientCert,
		Time:       cfg.Now,
		// TLS 1.3 session tickets, sealed with our own keys (rotating
		// every TicketKeyPeriod: crypto/tls's own rotate daily and live a
		// week) and carrying the envoy's identity: a reconnecting agent
		// resumes with a PSK handshake, which skips the certificate
		// exchange and its signatures (about a third of a full mTLS
		// handshake's CPU). A ticket resumes only while the envoy is
		// active, the certificate it was issued for is still the envoy's
		// current one and has not expired (unwrapSession); otherwise the
		// handshake is a full one. VerifyConnection still runs on a
		// resumed connection, with the ticket's certificate.
		WrapSession:   s.wrapSession,
		UnwrapSession: s.unwrapSession,
		// The key exchange: Go's default prefers the hybrid
		// post-quantum X25519MLKEM768 (a recorded session cannot be
		// decrypted later by a quantum computer); KeyExchangeX25519
		// trades that for less CPU per handshake (see Config.KeyExchange).
		CurvePreferences: cfg.KeyExchange.curves(),
		// Chain verification, then revocation and "is this the envoy's
		// current certificate" are checked here, so a revoked envoy
		// cannot even complete a handshake.
		VerifyConnection: s.verifyConnection,
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(&loggingCreds{TransportCredentials: credentials.NewTLS(s.tls), s: s}),
		grpc.ChainUnaryInterceptor(s.recoverInterceptor, s.loggingInterceptor, s.authInterceptor),
		grpc.StatsHandler(connStats{s.m.connections}),
		grpc.MaxRecvMsgSize(64<<10), // check-ins and CSRs are small
		// Small per-connection buffers: a fleet keeps one mostly idle
		// connection per envoy, and check-in messages are a few hundred
		// bytes, so the 32 KiB defaults would be memory held for nothing.
		grpc.ReadBufferSize(4<<10),
		grpc.WriteBufferSize(4<<10),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
		// Connections are re-established now and then so that every
		// connection is re-authenticated at a handshake.
		// IdleTimeout trades CPU for memory: an idle connection costs tens
		// of KB, a new one a full handshake per check-in.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: time.Minute, MaxConnectionIdle: cfg.IdleTimeout}),
	)
	agentpb.RegisterAgentServiceServer(s.grpc, &service{s: s})
	s.cancel = func() {}
	return s, nil
}

// start starts the background loops (batched check-in writes, directory
// refresh) once: New starts nothing.
func (s *Server) start() {
	s.startMu.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		s.wg.Add(2)
		go func() { defer s.wg.Done(); s.batch.run(ctx, s.cfg.FlushInterval) }()
		go func() { defer s.wg.Done(); s.refreshLoop(ctx) }()
	})
}

func (s *Server) refreshLoop(ctx context.Context) {
	start := time.Now()
	if n, err := s.dir.warm(ctx); err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("envoy directory not warmed; envoys are read at their first check-in", "err", err)
		}
	} else {
		s.logger.Debug("envoy directory warmed", "envoys", n, "took", time.Since(start).Round(time.Millisecond))
	}
	t := time.NewTicker(s.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.dir.refresh(ctx); err != nil && ctx.Err() == nil {
				s.logger.Error("refresh envoy directory", "err", err)
			}
		}
	}
}

// trustSnapshot is a set of roots and its generation (see certCache).
type trustSnapshot struct {
	roots *x509.CertPool
	gen   uint64
}

// bundle is the trust bundle handed to agents at check-in.
type bundle struct {
	ders   [][]byte
	digest []byte
}

// loadTrust takes the roots, the server certificate and the trust bundle
// from the CA.
func (s *Server) loadTrust(gen uint64) {
	s.trust.Store(&trustSnapshot{roots: s.cfg.CA.Pool().Clone(), gen: gen})
	cert := s.cfg.CA.ServerTLSCertificate()
	s.serverCert.Store(&cert)
	var ders [][]byte
	for _, c := range s.cfg.CA.Trusted() {
		ders = append(ders, c.Raw)
	}
	s.trustBundle.Store(&bundle{ders: ders, digest: agentpb.TrustBundleDigest(ders)})
}

// TrustChanged tells the server that the CA's trusted CAs, signing CA or
// server certificate changed (a CA rotation): the next handshakes use
// them, chains verified before are verified again, and agents receive the
// new trust bundle at their next check-in.
func (s *Server) TrustChanged() {
	s.loadTrust(s.trust.Load().gen + 1)
	// The entries of the previous generation can never match again.
	if s.certs != nil {
		s.certs.clear()
	}
}

// TLSConfig returns the server's TLS configuration (for tests and tools;
// do not modify it).
func (s *Server) TLSConfig() *tls.Config { return s.tls }

// PublicKey returns the public half of the response signing key.
func (s *Server) PublicKey() ed25519.PublicKey { return s.pubKey }

// Serve starts the background loops and serves gRPC on ln until
// GracefulStop or Close. It returns nil after a stop.
func (s *Server) Serve(ln net.Listener) error {
	s.start()
	if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve grpc: %w", err)
	}
	return nil
}

// Run serves on ln until ctx is done, then stops gracefully — waiting at
// most Config.DrainTimeout for calls in flight, then closing what remains
// — writes the pending check-ins and returns.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return err
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.logger.Warn("check-ins still in flight after the drain timeout: closing their connections", "drain_timeout", s.cfg.DrainTimeout)
	}
	s.Close()
	return <-errc
}

// GracefulStop stops accepting connections, waits for calls in flight and
// closes the server.
func (s *Server) GracefulStop() {
	s.grpc.GracefulStop()
	s.Close()
}

// Close stops the server at once, stops the background loops and writes
// the pending check-ins. It is safe to call more than once, and after New
// alone.
func (s *Server) Close() error {
	s.closeMu.Do(func() {
		s.grpc.Stop()
		s.cancel()
		s.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.batch.flush(ctx)
	})
	return nil
}

// EnvoyChanged tells the server that the envoy's record changed in the
// store (revoked, replaced, renewed, flags set): the next handshake or
// request reads it again.
func (s *Server) EnvoyChanged(uuid string) { s.dir.invalidate(uuid) }

// Flush writes the batched check-ins now (tests, shutdown hooks).
func (s *Server) Flush(ctx context.Context) { s.batch.flush(ctx) }

// verifyConnection runs in every handshake. It verifies the client's
// certificate chain (crypto/tls does not: ClientAuth is
// RequireAnyClientCert), then judges the envoy against the directory. The
// chain comes first, as when crypto/tls verified it: identify trusts what
// the certificate says.
func (s *Server) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	if err := s.verifyClientChain(cs.PeerCertificates, s.now()); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.identify(ctx, cs.PeerCertificates[0])
	return err
}

// loggingCreds logs refused handshakes with the peer address, which the
// TLS callbacks do not see.
type loggingCreds struct {
	credentials.TransportCredentials
	s *Server
}

func (c *loggingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, ai, err := c.TransportCredentials.ServerHandshake(&lingerConn{Conn: conn})
	if err != nil {
		var r *RefusedError
		if errors.As(err, &r) {
			c.s.m.handshakeRefusals.WithLabelValues(r.label()).Inc()
			c.s.logger.Warn("TLS handshake refused", "envoy_uuid", r.UUID, "source_ip", remoteIP(conn.RemoteAddr()), "err", r.Msg)
		} else {
			c.s.m.handshakeRefusals.WithLabelValues("tls").Inc()
			c.s.logger.Debug("TLS handshake failed", "source_ip", remoteIP(conn.RemoteAddr()), "err", err)
		}
	}
	return nc, ai, err
}

func (c *loggingCreds) Clone() credentials.TransportCredentials {
	return &loggingCreds{TransportCredentials: c.TransportCredentials.Clone(), s: c.s}
}

func remoteIP(a net.Addr) string {
	if a == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// lingerConn closes gracefully: it half-closes, then reads what the peer
// still sends (bounded in time and size) before closing. Without this, a
// connection refused in the TLS 1.3 handshake is closed with the client's
// last handshake messages unread, the kernel answers with a reset, and the
// client may never read the alert that says why it was refused.
type lingerConn struct {
	net.Conn
	once sync.Once
}

func (c *lingerConn) Close() error {
	c.once.Do(func() {
		cw, ok := c.Conn.(interface{ CloseWrite() error })
		if !ok {
			c.Conn.Close()
			return
		}
		_ = cw.CloseWrite()
		go func() {
			_ = c.Conn.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = io.Copy(io.Discard, io.LimitReader(c.Conn, 64<<10))
			c.Conn.Close()
		}()
	})
	return nil
}

// Judge tells whether a client certificate (already verified against the
// CA) may check in, and if not, why, in the words of the check-in refusal.
// The HTTPS API uses it to explain a refused handshake to the agent.
func (s *Server) Judge(ctx context.Context, cert *x509.Certificate) (uuid, msg string, accepted bool, err error) {
	id, err := s.identify(ctx, cert)
	if err == nil {
		return id.UUID, fmt.Sprintf("envoy %s is active", id.UUID), true, nil
	}
	var r *RefusedError
	if errors.As(err, &r) && r.Reason != "" {
		return r.UUID, r.Msg, false, nil
	}
	return "", "", false, err
}
