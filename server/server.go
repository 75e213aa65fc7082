// Package server assembles the Vigo Enroll server: it loads the
// configuration, the CA, the store and the policy source, and runs the
// HTTPS API, the gRPC check-in service and the policy controller as one
// group: when one fails, all stop.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/agentdist"
	"github.com/vigo-enroll/vigo/server/bootstrap"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/carotate"
	"github.com/vigo-enroll/vigo/server/console"
	"github.com/vigo-enroll/vigo/server/enroll"
	"github.com/vigo-enroll/vigo/server/feedback"
	"github.com/vigo-enroll/vigo/server/grpcapi"
	"github.com/vigo-enroll/vigo/server/httpapi"
	"github.com/vigo-enroll/vigo/server/notify"
	"github.com/vigo-enroll/vigo/server/policyctl"
	"github.com/vigo-enroll/vigo/server/ratelimit"
	"github.com/vigo-enroll/vigo/server/store"
)

// Server is a running Vigo Enroll server.
type Server struct {
	cfg      *Config
	log      *slog.Logger
	store    store.Store
	ca       *ca.CA
	rotator  *carotate.Rotator
	ctl      *policyctl.Controller
	dirSrc   *gitsync.Dir
	grpc     *grpcapi.Server
	dist     *agentdist.Dist
	notifier *notify.Notifier
	poster   *feedback.Poster
	http     *http.Server
	apiLn    net.Listener
	grpcLn   net.Listener
	metrics  *http.Server // nil without server.metrics_listen
	metLn    net.Listener // its listener
	registry *prometheus.Registry
	// AdminTokenFile is where the admin token was written at first start.
	AdminTokenFile string

	// httpsCert is the operator's HTTPS certificate; nil when HTTPS
	// presents the CA's server certificate.
	httpsCert *httpsCert
}

// New loads everything the server needs and opens its listeners, so that
// the addresses are known before Run.
func New(ctx context.Context, cfg *Config, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// A configuration made in code gets the same defaults and checks as
	// one read from server.yaml (both are idempotent).
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: logger, registry: prometheus.NewRegistry()}
	built := false
	defer func() {
		// s, not a named result: an error return sets that to nil, and
		// what was opened so far must still be closed.
		if !built {
			s.Close()
		}
	}()
	var err error
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	data := cfg.Server.DataDir
	if err := prepareDataDir(data, logger); err != nil {
		return nil, err
	}

	// Listeners first: a port in use is the most common start-up failure.
	if s.apiLn, err = net.Listen("tcp", cfg.Server.APIListen); err != nil {
		return nil, fmt.Errorf("listen on server.api_listen %s: %w", cfg.Server.APIListen, err)
	}
	if s.grpcLn, err = net.Listen("tcp", cfg.Server.GRPCListen); err != nil {
		return nil, fmt.Errorf("listen on server.grpc_listen %s: %w", cfg.Server.GRPCListen, err)
	}
	if cfg.Server.MetricsListen != "" {
		if s.metLn, err = net.Listen("tcp", cfg.Server.MetricsListen); err != nil {
			return nil, fmt.Errorf("listen on server.metrics_listen %s: %w", cfg.Server.MetricsListen, err)
		}
	}

	names := append([]string{cfg.Server.Hostname}, cfg.Server.TLSSANs...)
	// The CA's server certificate (default paths): gRPC's always, and
	// HTTPS's too unless the operator provides one.
	s.ca, err = ca.LoadOrCreate(ca.Config{
		Dir: data, CAFile: cfg.Server.TLS.CAFile, CAKeyFile: cfg.Server.TLS.CAKeyFile, Hostnames: names,
	})
	if err != nil {
		return nil, err
	}
	if certFile, keyFile := cfg.HTTPSCertPaths(); certFile != "" {
		if s.httpsCert, err = newHTTPSCert(certFile, keyFile, logger.With("component", "https"), nil); err != nil {
			return nil, err
		}
		leaf := s.httpsCert.Leaf()
		logger.Info("HTTPS presents the operator's certificate; gRPC a certificate from Vigo's CA", "file", certFile,
			"subject", leaf.Subject.String(), "issuer", leaf.Issuer.String(), "not_after", leaf.NotAfter)
	}
	if s.ca.Created {
		logger.Info("created a new CA", "fingerprint", s.ca.Fingerprint(), "dir", filepath.Join(data, "tls"))
	}
	paths := cfg.StatePaths()
	signKey, err := ca.LoadOrCreateSigningKey(paths.SigningKey)
	if err != nil {
		return nil, err
	}

	tokenFile := paths.AdminToken
	adminHash, created, recomputed, saveErr, err := adminToken(tokenFile)
	if err != nil {
		return nil, err
	}
	s.AdminTokenFile = tokenFile
	switch {
	case created:
		logger.Info("generated the admin token; vigocli on this host reads it from there", "file", tokenFile)
	case recomputed && saveErr != nil:
		logger.Warn("admin token hash file missing: using the hash of the existing token, but it could not be saved", "file", tokenFile+".sha256", "err", saveErr)
	case recomputed:
		logger.Info("admin token hash file missing: recomputed it from the existing token", "file", tokenFile+".sha256")
	}

	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// Every change to an envoy, whoever makes it (policy controller,
	// admin API, registration, renewal), reaches the gRPC server's cache.
	notify := &store.Notifying{Store: st}
	s.store = notify

	distDir := cfg.Agent.DistDir
	if distDir == "" {
		distDir = filepath.Join(data, "dist")
	}
	s.dist, err = agentdist.New(agentdist.Config{Dir: distDir, Logger: logger, SigningKeyFile: cfg.Agent.SigningKeyFile})
	if err != nil {
		return nil, err
	}

	// The CA follows the rotation state shared through the store before
	// anything hands out or verifies a certificate.
	if s.rotator, err = carotate.New(carotate.Config{Store: notify, CA: s.ca, Replica: cfg.Server.Replica, Logger: logger}); err != nil {
		return nil, err
	}
	if _, err := s.rotator.Sync(ctx); err != nil {
		return nil, fmt.Errorf("apply the CA rotation state: %w", err)
	}

	grpcPort := s.grpcLn.Addr().(*net.TCPAddr).Port
	apiPort := s.apiLn.Addr().(*net.TCPAddr).Port
	advertised := cfg.Server.Hostname
	grpcAddr := net.JoinHostPort(advertised, strconv.Itoa(grpcPort))
	publicURL := "https://" + net.JoinHostPort(advertised, strconv.Itoa(apiPort))
	interval := time.Duration(cfg.Bootstrap.CheckinInterval)
	// The fleet's gauges, counted at most every 30 s whatever the scrapes.
	s.registry.MustRegister(newFleetCollector(notify, console.StaleIntervals*interval, 30*time.Second, logger))

	s.grpc, err = grpcapi.New(grpcapi.Config{
		Store: notify, CA: s.ca, SigningKey: signKey, Logger: logger, Interval: interval,
		RefreshInterval: time.Duration(cfg.Server.ReplicaRefresh),
		IdleTimeout:     time.Duration(cfg.Server.GRPCIdleTimeout),
		Registerer:      s.registry, Replica: cfg.Server.Replica,
		KeyExchange: grpcapi.KeyExchange(cfg.Server.TLS.KeyExchange),
		CertValidity: func() time.Duration {
			if p := s.policy(); p != nil {
				return p.CertValidity()
			}
			return 0
		},
		AgentVersion:  s.agentVersion,
		TargetVersion: func() string { return cfg.Agent.Version },
		PerEnvoy:      limit(cfg.Bootstrap.CheckinRateLimit.PerSecond, cfg.Bootstrap.CheckinRateLimit.Burst),
		// A shared database means possibly several replicas.
		SharedNonces: cfg.Database.Driver == "postgres",
	})
	if err != nil {
		return nil, err
	}
	// Wired before anything can change an envoy (the policy controller's
	// restore below included).
	notify.Changed = s.grpc.EnvoyChanged

	if err := s.startFeedback(); err != nil {
		return nil, err
	}
	if err := s.startPolicy(ctx); err != nil {
		return nil, err
	}

	// Without agent.signing_key_file, the key is the distribution's (its
	// manifest's signing_key, as written by "vigocli dist sign"), read at
	// each registration so that a newly signed dist is pinned at once.
	signingKeyPEM := func() string { return string(s.dist.SigningKeyPEM()) }
	if cfg.Agent.SigningKeyFile != "" {
		b, err := os.ReadFile(cfg.Agent.SigningKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read agent.signing_key_file: %w", err)
		}
		if blk, _ := pem.Decode(b); blk == nil || blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("agent.signing_key_file %s: not a PEM PUBLIC KEY", cfg.Agent.SigningKeyFile)
		}
		signingKeyPEM = func() string { return string(b) }
	}
	enr, err := enroll.New(enroll.Config{
		Store: notify, CA: s.ca, Policy: s.policy, Replica: cfg.Server.Replica,
		GRPCAddress: grpcAddr, CheckinInterval: interval, ServerPublicKey: signKey.Public().(ed25519.PublicKey),
		SigningKeyPEM: signingKeyPEM, Logger: logger, Registerer: s.registry,
		OnDenied: func(reason string) {
			if s.notifier != nil {
				s.notifier.Refused(reason, cfg.Server.Replica)
			}
		},
		TokenChecks: limit(cfg.Bootstrap.RateLimit.TokenChecksPerSecond, cfg.Bootstrap.RateLimit.TokenChecksBurst),
	})
	if err != nil {
		return nil, err
	}
	proxies, _ := cfg.TrustedProxyPrefixes()
	var webhookSecret []byte
	if f := cfg.Policy.WebhookSecretFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read policy.webhook_secret_file: %w", err)
		}
		webhookSecret = []byte(strings.TrimSpace(string(b)))
		if len(webhookSecret) < 16 {
			return nil, fmt.Errorf("policy.webhook_secret_file %s: the secret must be at least 16 characters", f)
		}
	}
	var ctl httpapi.PolicyController
	if s.ctl != nil {
		ctl = s.ctl
	}
	// The one-liner printed with a new token. When the HTTPS certificate
	// is issued by this server's own CA, which clients do not trust, it
	// pins the server's key for curl and the CA for vigo register (see
	// bootstrap.OneLiner); with an operator's certificate (s.httpsCert)
	// curl verifies the chain itself: only the CA is pinned.
	oneLiner := bootstrap.OneLinerParams{ServerURL: publicURL, CAFingerprint: s.ca.Fingerprint()}
	if s.httpsCert == nil {
		serverCert := s.ca.ServerTLSCertificate()
		if leaf, err := x509.ParseCertificate(serverCert.Certificate[0]); err == nil && leaf.CheckSignatureFrom(s.ca.Certificate()) == nil {
			oneLiner.ServerKeyPin = bootstrap.ServerKeyPin(leaf)
		}
	}
	ops, err := admin.New(admin.Config{Store: notify, Policy: s.policy, Replica: cfg.Server.Replica, Logger: logger,
		OneLiner: func(token string) (string, error) {
			p := oneLiner
			// The CA that signs now (a CA rotation changes it); the
			// server key pinned for curl stays the same.
			p.Token, p.CAFingerprint = token, s.ca.Fingerprint()
			return bootstrap.OneLiner(p)
		},
	})
	if err != nil {
		return nil, err
	}
	// The server's own admin token and the named ones of the store, for
	// the admin API and the console alike.
	// The server's token follows vigosrv admin-token rotate without a
	// restart; each rotation this replica sees is audited.
	serverToken := newAdminTokenFiles(paths, adminHash, logger, func(until time.Time) {
		logger.Info("admin token rotated", "previous_accepted_until", until)
		prev := "no longer accepted"
		if !until.IsZero() {
			prev = until.UTC().Format(time.RFC3339)
		}
		ev := store.AuditEvent{At: time.Now(), Type: store.AuditAdminTokenRotated, Result: "ok",
			Actor: "vigosrv admin-token rotate", Replica: cfg.Server.Replica,
			Details: map[string]string{"previous_accepted_until": prev}}
		if err := notify.AppendAudit(context.Background(), ev); err != nil {
			logger.Error("audit the admin token rotation", "err", err)
		}
	})
	auth := admin.Tokens{Server: serverToken, Store: notify}
	var api *httpapi.API // the console asks it for a request's source address
	var consoleCtl console.PolicyController
	if s.ctl != nil {
		consoleCtl = s.ctl
	}
	con, err := console.New(console.Config{
		Store: notify, Ops: ops, Auth: auth, Policy: s.policy, PolicyCtl: consoleCtl,
		CheckinInterval: interval, SourceIP: func(r *http.Request) netip.Addr { return api.SourceIP(r) },
		Replica: cfg.Server.Replica, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	api, err = httpapi.New(httpapi.Config{
		Enroller: enr, Store: notify, Policy: s.policy, PolicyCtl: ctl, Dist: s.dist, Ops: ops, Auth: auth, Console: con,
		Bootstrap: func(goos string) ([]byte, string, error) {
			script, err := bootstrap.Render(bootstrap.Params{ServerURL: publicURL, GRPCAddress: grpcAddr, CAFingerprint: s.ca.Fingerprint(), OS: goos,
				// An operator's certificate is meant to be trusted by hosts:
				// the script then verifies its downloads too.
				VerifyTLS: s.httpsCert != nil})
			return script, bootstrap.ContentType(goos), err
		},
		Judge:         s.grpc.Judge,
		WebhookSecret: webhookSecret, TrustedProxies: proxies,
		PerAddress: limit(cfg.Bootstrap.RateLimit.PerSecond, cfg.Bootstrap.RateLimit.Burst),
		PerNetwork: limit(cfg.Bootstrap.RateLimit.NetworkPerSecond, cfg.Bootstrap.RateLimit.NetworkBurst),
		PublicURL:  publicURL, Replica: cfg.Server.Replica, Ready: s.ready,
		Registerer: s.registry, Gatherer: s.registry, Logger: logger,
		MetricsElsewhere: s.metLn != nil,
	})
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS12, // PowerShell 5.1 and older curl speak TLS 1.2
		// With TLS 1.2, only ECDHE key exchange (forward secrecy: a key
		// stolen later does not decrypt recorded sessions, which carry
		// tokens and the admin token) and AEAD ciphers (no CBC-SHA1 with
		// its padding-oracle history). Go's defaults still include the
		// CBC suites; every TLS 1.2 client of the last decade, PowerShell
		// 5.1 on Windows 10 included, offers one of these. TLS 1.3 suites
		// are all AEAD with forward secrecy and are not configurable.
		CipherSuites: tls12Suites,
		// The CA's server certificate of now: a CA rotation replaces it.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c := s.ca.ServerTLSCertificate()
			return &c, nil
		},
		// Envoys may present their certificate (self-update downloads
		// over mTLS); nobody has to, since bootstrap routes are open.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  s.ca.Pool(),
	}
	if s.httpsCert != nil {
		tlsCfg.GetCertificate = s.httpsCert.GetCertificate
	}
	// The trusted CAs of now (both during a CA rotation), for every
	// handshake.
	tlsCfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := tlsCfg.Clone()
		c.GetConfigForClient, c.ClientCAs = nil, s.ca.Pool()
		return c, nil
	}
	if s.metLn != nil {
		// Plain HTTP, as Prometheus scrapes by default: the listener
		// serves only metrics and health, which hold no secret and
		// nothing per token; bind it to loopback or a management network.
		s.metrics = &http.Server{
			Handler:           api.MetricsHandler(),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      time.Minute,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(logger.With("component", "metrics").Handler(), slog.LevelDebug),
		}
	}
	s.http = &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      5 * time.Minute, // agent downloads on slow links
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.With("component", "https").Handler(), slog.LevelDebug),
		TLSConfig:         tlsCfg,
	}
	attrs := []any{"api", s.apiLn.Addr().String(), "grpc", s.grpcLn.Addr().String()}
	if s.metLn != nil {
		attrs = append(attrs, "metrics", s.metLn.Addr().String())
	}
	logger.Info("server ready to start", append(attrs,
		"public_url", publicURL, "ca_fingerprint", s.ca.Fingerprint(), "replica", cfg.Server.Replica)...)
	built = true
	return s, nil
}

// limit is a configured rate (negative: off) as a ratelimit.Limit.
func limit(perSecond float64, burst int) ratelimit.Limit {
	return ratelimit.Limit{PerSecond: perSecond, Burst: burst}
}

// tls12Suites are the TLS 1.2 cipher suites of the HTTPS listener: ECDHE
// with an AEAD, for ECDSA (the generated server certificate) and RSA
// (an operator's certificate) keys.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

func (s *Server) startPolicy(ctx context.Context) error {
	cfg := s.cfg
	var src gitsync.Source
	interval := time.Minute
	switch {
	case cfg.Policy.Dir != "":
		d, err := gitsync.NewDir(gitsync.DirConfig{Path: cfg.Policy.Dir, Logger: s.log})
		if err != nil {
			return fmt.Errorf("policy.dir: %w", err)
		}
		s.dirSrc, src = d, d
	case cfg.Policy.Git != nil:
		g := cfg.Policy.Git
		gc := gitsync.GitConfig{URL: g.URL, Ref: g.Ref, Path: g.Path, Timeout: time.Duration(g.Timeout), Logger: s.log}
		gc.Auth.Username = g.Auth.Username
		gc.Auth.SSHKeyFile = g.Auth.SSHKeyFile
		gc.Auth.KnownHostsFile = g.Auth.KnownHostsFile
		if g.Auth.TokenFile != "" {
			b, err := os.ReadFile(g.Auth.TokenFile)
			if err != nil {
				return fmt.Errorf("read policy.git.auth.token_file: %w", err)
			}
			gc.Auth.Token = strings.TrimSpace(string(b))
		}
		gc.Verify.SSHAllowedSignersFile = g.Verify.SSHAllowedSignersFile
		gc.Verify.OpenPGPKeyringFile = g.Verify.OpenPGPKeyringFile
		gc.Verify.Mode = g.Verify.Mode
		gs, err := gitsync.NewGit(gc)
		if err != nil {
			return fmt.Errorf("policy.git: %w", err)
		}
		src = gs
		interval = time.Duration(g.Interval)
	default:
		s.log.Warn("no policy source configured (policy.dir or policy.git): only token enrollment is possible")
		return nil
	}
	ctl, err := policyctl.New(policyctl.Config{
		Source: src, Store: s.store, Interval: interval, Logger: s.log,
		Replica: cfg.Server.Replica, Registerer: s.registry, Limits: cfg.Policy.EvalLimits.Limits(),
		OnEvent: func(e policyctl.Event) {
			if s.poster != nil {
				s.poster.Handle(e)
			}
			if s.notifier != nil {
				s.notifier.Policy(e)
			}
		},
	})
	if err != nil {
		return err
	}
	s.ctl = ctl
	if err := ctl.Restore(ctx); err != nil {
		s.log.Warn("no persisted policy revision restored", "err", err)
	}
	return nil
}

// startFeedback builds the commit status poster and the notifier from the
// configuration (neither when not configured).
func (s *Server) startFeedback() error {
	cfg := s.cfg
	if f := cfg.Policy.Feedback; f != nil {
		tok, err := readSecretFile(f.TokenFile)
		if err != nil {
			return fmt.Errorf("policy.feedback.token_file: %w", err)
		}
		repo := f.Repository
		if repo == "" && cfg.Policy.Git != nil {
			repo = feedback.RepositoryFromURL(cfg.Policy.Git.URL)
		}
		st := s.store
		s.poster, err = feedback.New(feedback.Config{
			Kind: f.Kind, APIURL: f.APIURL, Repository: repo, Token: tok, Context: f.Context, TargetURL: f.TargetURL,
			Replica: cfg.Server.Replica, Logger: s.log, Registerer: s.registry,
			AppliedElsewhere: func(rev string) bool {
				_, err := st.GetPolicyHistory(context.Background(), rev)
				return err == nil
			},
		})
		if err != nil {
			return err
		}
	}
	n := cfg.Notifications
	if len(n.Receivers) == 0 {
		return nil
	}
	var rs []notify.Receiver
	for _, r := range n.Receivers {
		rc := notify.Receiver{Name: r.Name, Kind: r.Kind, URL: r.URL, Events: r.Events}
		if r.URLFile != "" {
			u, err := readSecretFile(r.URLFile)
			if err != nil {
				return fmt.Errorf("notifications receiver %s: url_file: %w", r.Name, err)
			}
			rc.URL = u
		}
		if r.SecretFile != "" {
			sec, err := readSecretFile(r.SecretFile)
			if err != nil {
				return fmt.Errorf("notifications receiver %s: secret_file: %w", r.Name, err)
			}
			rc.Secret = []byte(sec)
		}
		rs = append(rs, rc)
	}
	var err error
	s.notifier, err = notify.New(notify.Config{
		Receivers: rs, Logger: s.log, Registerer: s.registry,
		Refusals: notify.Threshold{Count: n.RefusalThreshold.Count, Window: time.Duration(n.RefusalThreshold.Window)},
	})
	return err
}

// readSecretFile reads a one-line secret.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}

// policy returns the active policy, or nil when none has ever been valid.
func (s *Server) policy() *policy.Policy {
	if s.ctl == nil {
		return nil
	}
	return s.ctl.Active()
}

func (s *Server) ready() string {
	// Without a policy source the server enrolls by token only, which it
	// can do at once (New warns about it): ready, or a container running
	// it that way would be restarted as unhealthy forever.
	if s.ctl != nil && s.policy() == nil {
		return "no valid enrollment policy has been loaded yet: see `vigocli policy status`"
	}
	return ""
}

// agentVersion is the agent build served for a platform.
func (s *Server) agentVersion(goos, goarch string) (version, sha string, ok bool) {
	l, ok := s.dist.Latest(goos, goarch)
	if !ok {
		return "", "", false
	}
	return l.Version, l.SHA256, true
}

// APIAddr is the address the HTTPS API listens on.
func (s *Server) APIAddr() net.Addr { return s.apiLn.Addr() }

// GRPCAddr is the address the gRPC service listens on.
func (s *Server) GRPCAddr() net.Addr { return s.grpcLn.Addr() }

// MetricsAddr is the address of the metrics listener (server.metrics_listen),
// nil when there is none.
func (s *Server) MetricsAddr() net.Addr {
	if s.metLn == nil {
		return nil
	}
	return s.metLn.Addr()
}

// CA returns the server's CA.
func (s *Server) CA() *ca.CA { return s.ca }

// Store returns the server's store (for tests and tools).
func (s *Server) Store() store.Store { return s.store }

// CAPool returns a pool with the server's CA, for clients.
func (s *Server) CAPool() *x509.CertPool { return s.ca.Pool() }

// Reload asks the policy source for a new revision now and re-reads the
// agent distribution and an operator's HTTPS certificate (SIGHUP).
func (s *Server) Reload() {
	if s.httpsCert != nil {
		s.httpsCert.Reload()
	}
	if s.ctl != nil {
		s.ctl.Trigger()
	}
	if err := s.dist.Reload(); err != nil {
		s.log.Warn("reload agent distribution", "err", err)
	}
}

// Run serves until ctx is done or a component fails, then shuts down
// gracefully: in-flight requests finish, batched check-ins are written.
func (s *Server) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := s.http.ServeTLS(s.apiLn, "", "")
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("https: %w", err)
	})
	g.Go(func() error {
		// Run drains check-ins in flight for a bounded time at shutdown.
		if err := s.grpc.Run(ctx, s.grpcLn); err != nil {
			return fmt.Errorf("grpc: %w", err)
		}
		return nil
	})
	if s.metrics != nil {
		g.Go(func() error {
			if err := s.metrics.Serve(s.metLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
	}
	if s.dirSrc != nil {
		g.Go(func() error { return s.dirSrc.Run(ctx) })
	}
	g.Go(func() error {
		// A CA rotation step run by `vigosrv ca rotate` (here or on
		// another replica) applies within server.replica_refresh.
		s.rotator.Watch(ctx, time.Duration(s.cfg.Server.ReplicaRefresh), s.grpc.TrustChanged)
		return nil
	})
	if s.ctl != nil {
		g.Go(func() error { return s.ctl.Run(ctx) })
	}
	if s.poster != nil {
		g.Go(func() error { return s.poster.Run(ctx) })
	}
	if s.notifier != nil {
		g.Go(func() error { return s.notifier.Run(ctx) })
	}
	if r := time.Duration(s.cfg.Database.Retention); r > 0 {
		g.Go(func() error { s.prune(ctx, r); return nil })
	}
	g.Go(func() error {
		// At shutdown the HTTPS requests in flight get a bounded time to
		// finish (the gRPC server drains in its own Run, concurrently);
		// what remains is then closed.
		<-ctx.Done()
		s.log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, hs := range []*http.Server{s.http, s.metrics} {
			if hs == nil {
				continue
			}
			if err := hs.Shutdown(sctx); err != nil {
				s.log.Warn("HTTP requests still in flight at the shutdown timeout: closing them", "err", err)
				_ = hs.Close()
			}
		}
		return nil
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func (s *Server) prune(ctx context.Context, retention time.Duration) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		n, err := s.store.Prune(ctx, time.Now().Add(-retention))
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("prune old records", "err", err)
		case n > 0:
			s.log.Info("pruned old records", "rows", n, "retention", retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close releases everything New opened. Run must have returned.
func (s *Server) Close() {
	if s.grpc != nil {
		_ = s.grpc.Close() // flushes batched check-ins
	}
	for _, ln := range []net.Listener{s.apiLn, s.grpcLn, s.metLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if s.store != nil {
		_ = s.store.Close()
	}
}
