package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/vigo-enroll/vigo/agent/update"
	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// Version is the agent's version, set at build time with
// -ldflags "-X github.com/vigo-enroll/vigo/agent.Version=v1.2.3".
var Version = "dev"

// Config configures an Agent. Zero values are defaults.
type Config struct {
	// Dir is the config folder (default DefaultDir).
	Dir string
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Version is the agent version reported in check-ins (default Version).
	Version string
	// Update is called when the server asks for another agent version;
	// nil logs the request and ignores it. It is implemented by
	// agent/update (Updater.Update).
	Update func(ctx context.Context, want update.Want) error
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// MaxBackoff caps the wait between failed check-ins (default 5m).
	MaxBackoff time.Duration
	// Hostname is reported in check-ins (default: the enrolled hostname).
	Hostname string
}

// Agent runs check-ins for the enrollment saved in Config.Dir.
type Agent struct {
	cfg    Config
	logger *slog.Logger

	mu     sync.Mutex
	enr    *Enrollment
	conn   *grpc.ClientConn
	client agentpb.AgentServiceClient

	handshakeRefusals int // in a row; see handshakeAttempts
}

// handshakeAttempts is how many refusals of the envoy's certificate at the
// TLS handshake in a row make the agent conclude that the server refuses it
// for good: one could be a server restarting with an older directory.
const handshakeAttempts = 3

// New loads the enrollment from cfg.Dir.
func New(cfg Config) (*Agent, error) {
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Version == "" {
		cfg.Version = Version
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	a := &Agent{cfg: cfg, logger: cfg.Logger.With("component", "agent")}
	enr, err := Load(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := a.use(enr); err != nil {
		return nil, err
	}
	return a, nil
}

// Enrollment returns the current enrollment.
func (a *Agent) Enrollment() *Enrollment {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.enr
}

// use switches to an enrollment and a fresh connection for it.
func (a *Agent) use(enr *Enrollment) error {
	conn, err := grpc.NewClient(enr.File.GRPCAddress,
		grpc.WithTransportCredentials(credentials.NewTLS(enr.ClientTLSConfig())),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<10)))
	if err != nil {
		return fmt.Errorf("connect %s: %w", enr.File.GRPCAddress, err)
	}
	a.mu.Lock()
	old := a.conn
	a.enr, a.conn, a.client = enr, conn, agentpb.NewAgentServiceClient(conn)
	a.handshakeRefusals = 0
	a.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// reconnect replaces the connection, so that the next handshake presents
// the current certificate.
func (a *Agent) reconnect() error { return a.use(a.Enrollment()) }

// Close closes the connection.
func (a *Agent) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn == nil {
		return nil
	}
	err := a.conn.Close()
	a.conn = nil
	return err
}

// CheckinResult is the verified answer to a check-in.
type CheckinResult struct {
	ServerTime time.Time
	Next       time.Duration
	Actions    []*agentpb.Action
}

// Checkin sends one signed check-in and verifies the signed answer. It does
// not act on the answer (see CheckinOnce).
func (a *Agent) Checkin(ctx context.Context) (*CheckinResult, error) {
	a.mu.Lock()
	enr, client := a.enr, a.client
	a.mu.Unlock()
	host := a.cfg.Hostname
	if host == "" {
		host = enr.File.Hostname
	}
	req := &agentpb.CheckinRequest{
		Uuid:              enr.File.UUID,
		Hostname:          host,
		AgentVersion:      a.cfg.Version,
		Os:                runtime.GOOS,
		Arch:              runtime.GOARCH,
		TimestampUnixNano: a.cfg.Now().UnixNano(),
		TrustBundleSha256: enr.trustDigest(),
	}
	req.Sign(enr.Key)

	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := client.Checkin(cctx, req)
	if err != nil {
		return nil, a.classify(enr, err)
	}
	a.mu.Lock()
	a.handshakeRefusals = 0
	a.mu.Unlock()
	if err := agentpb.VerifyResponse(enr.ServerKey, req, resp); err != nil {
		return nil, err
	}
	// A new trust bundle (CA rotation): saved before acting on the answer,
	// so that a certificate renewed onto a new CA verifies, and the next
	// connection verifies the server against it.
	bundle, err := agentpb.VerifyTrustBundle(enr.ServerKey, resp)
	if err != nil {
		return nil, err
	}
	if bundle != nil && !bytes.Equal(agentpb.TrustBundleDigest(bundle), req.GetTrustBundleSha256()) {
		if err := enr.saveTrust(bundle); err != nil {
			return nil, err
		}
		a.logger.Info("trusted CAs updated by the server (CA rotation)", "envoy_uuid", enr.File.UUID, "cas", len(bundle))
		if err := a.reconnect(); err != nil {
			return nil, err
		}
	}
	res := &CheckinResult{
		ServerTime: time.Unix(0, resp.GetServerTimeUnixNano()),
		Next:       time.Duration(resp.GetNextCheckinMillis()) * time.Millisecond,
		Actions:    resp.GetActions(),
	}
	return res, nil
}

// classify turns refusals into a *RevokedError where they are final.
func (a *Agent) classify(enr *Enrollment, err error) error {
	st := status.Convert(err)
	switch refusal := agentpb.RefusalOf(err); {
	case refusal == agentpb.RefusalEnvoyRevoked || refusal == agentpb.RefusalEnvoyUnknown:
		return &RevokedError{UUID: enr.File.UUID, Reason: st.Message()}
	case refusal == "" && st.Code() == codes.PermissionDenied:
		// A server from before structured refusals: PermissionDenied
		// was sent only for a revoked envoy.
		return &RevokedError{UUID: enr.File.UUID, Reason: st.Message()}
	case refusal == agentpb.RefusalCertificateNotCurrent:
		// Renewed elsewhere or by an earlier run: a new handshake
		// presents the current certificate.
		if rerr := a.reconnect(); rerr != nil {
			return rerr
		}
		return fmt.Errorf("check-in: %s", st.Message())
	case st.Code() == codes.Unavailable:
		// A transport failure: find out whether the server refuses our
		// certificate or is just unreachable.
		perr := ProbeHandshake(context.Background(), enr.File.GRPCAddress, enr.ClientTLSConfig())
		var refused *HandshakeRefusedError
		if !errors.As(perr, &refused) {
			a.mu.Lock()
			a.handshakeRefusals = 0
			a.mu.Unlock()
			break
		}
		a.mu.Lock()
		a.handshakeRefusals++
		n := a.handshakeRefusals
		a.mu.Unlock()
		if n >= handshakeAttempts {
			reason := "the server refused this envoy's certificate at the TLS handshake (" +
				refused.Alert + "): it is revoked, replaced or unknown; register again with `vigo register --force`"
			if c := enr.Certificate(); c != nil && a.cfg.Now().After(c.NotAfter) {
				// The server's alert does not say why (crypto/tls sends
				// "bad certificate" for every refusal it is told of).
				reason = fmt.Sprintf("this envoy's certificate expired at %s (the agent was not running when it was due for renewal): register again with `vigo register --force`",
					c.NotAfter.UTC().Format(time.RFC3339))
			} else if why := explainRefusal(enr); why != "" {
				reason = why
			}
			return &RevokedError{UUID: enr.File.UUID, Reason: reason}
		}
		return fmt.Errorf("check-in: %w", refused)
	}
	return fmt.Errorf("check-in: %s: %s", st.Code(), st.Message())
}

// CheckinConfirmed is CheckinOnce for a single run (`vigo run --once`): a
// refusal at the TLS handshake, which carries no reason, is tried again
// (1 s, then 2 s later) until the agent concludes, after
// handshakeAttempts refusals in a row, that the envoy is refused for good
// (a *RevokedError), as the service does over its check-ins, rather than
// reporting a transient failure.
func (a *Agent) CheckinConfirmed(ctx context.Context) (*CheckinResult, error) {
	for attempt := 1; ; attempt++ {
		res, err := a.CheckinOnce(ctx)
		if _, refused := errors.AsType[*HandshakeRefusedError](err); !refused || attempt >= handshakeAttempts {
			return res, err
		}
		t := time.NewTimer(time.Duration(attempt) * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, err
		case <-t.C:
		}
	}
}

// CheckinOnce does one check-in and acts on the answer: renew, rebootstrap
// (re-register with force and switch to the new identity), update.
func (a *Agent) CheckinOnce(ctx context.Context) (*CheckinResult, error) {
	res, err := a.Checkin(ctx)
	if err != nil {
		a.saveStatus(err)
		return nil, err
	}
	a.saveStatus(nil)
	renewed := false
	rebootstrap := slices.ContainsFunc(res.Actions, func(act *agentpb.Action) bool {
		return act.GetType() == agentpb.ActionType_ACTION_TYPE_REBOOTSTRAP
	})
	for _, act := range res.Actions {
		switch act.GetType() {
		case agentpb.ActionType_ACTION_TYPE_REBOOTSTRAP:
			a.logger.Info("server asks to rebootstrap", "envoy_uuid", a.Enrollment().File.UUID)
			if err := a.Rebootstrap(ctx); err != nil {
				return res, err
			}
			return res, nil
		case agentpb.ActionType_ACTION_TYPE_RENEW:
			if !renewed {
				if err := a.Renew(ctx); err != nil {
					return res, err
				}
				renewed = true
			}
		case agentpb.ActionType_ACTION_TYPE_UPDATE:
			if a.cfg.Update == nil {
				a.logger.Info("server offers another agent version; self-update is not enabled", "version", act.GetVersion())
				continue
			}
			want := update.Want{Version: act.GetVersion(), SHA256: act.GetSha256(), AllowDowngrade: act.GetAllowDowngrade()}
			if err := a.cfg.Update(ctx, want); err != nil {
				if rebootstrap {
					// A failed update must not keep the envoy on an
					// identity an operator wants replaced.
					a.logger.Warn("update before rebootstrap failed; rebootstrapping with this agent", "version", act.GetVersion(), "err", err)
					continue
				}
				return res, fmt.Errorf("update to %s: %w", act.GetVersion(), err)
			}
		}
	}
	if !renewed && a.dueForRenewal() {
		if err := a.Renew(ctx); err != nil {
			return res, err
		}
	}
	return res, nil
}

// dueForRenewal reports whether the certificate is past 2/3 of its life
// (the agent renews on its own even if no server asks, e.g. an old server).
func (a *Agent) dueForRenewal() bool {
	c := a.Enrollment().Certificate()
	life := c.NotAfter.Sub(c.NotBefore)
	return !a.cfg.Now().Before(c.NotBefore.Add(life * 2 / 3))
}

// Renew asks for a new certificate for the same key, saves it and
// reconnects so that the next handshake presents it.
func (a *Agent) Renew(ctx context.Context) error {
	a.mu.Lock()
	enr, client := a.enr, a.client
	a.mu.Unlock()
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: enr.File.Hostname},
	}, enr.Key)
	if err != nil {
		return fmt.Errorf("renew: create CSR: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := client.RenewCertificate(cctx, &agentpb.RenewCertificateRequest{Csr: csr})
	if err != nil {
		return a.classify(enr, err)
	}
	cert, err := x509.ParseCertificate(resp.GetCertificate())
	if err != nil {
		return fmt.Errorf("renew: parse certificate: %w", err)
	}
	if pub, ok := cert.PublicKey.(ed25519.PublicKey); !ok || !pub.Equal(enr.Key.Public()) {
		return errors.New("renew: the certificate returned is not for this envoy's key")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: enr.CAPool(), CurrentTime: a.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("renew: the certificate returned does not verify against the saved CA: %w", err)
	}
	if err := enr.saveCert(cert); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	a.logger.Info("certificate renewed", "envoy_uuid", enr.File.UUID, "not_after", cert.NotAfter)
	// The server refuses the old certificate from now on, also on this
	// connection: reconnect, presenting the new one.
	return a.reconnect()
}

// Rebootstrap registers again with force (new key, new uuid), proving the
// current identity, and switches to the new enrollment.
func (a *Agent) Rebootstrap(ctx context.Context) error {
	old := a.Enrollment()
	enr, err := Register(ctx, RegisterParams{
		Server:   old.File.ServerURL,
		Hostname: old.File.Hostname,
		Force:    true,
		Dir:      a.cfg.Dir,
		Logger:   a.cfg.Logger,
		Now:      a.cfg.Now,
		previous: old,
	})
	if err != nil {
		return fmt.Errorf("rebootstrap: %w", err)
	}
	a.logger.Info("rebootstrapped", "old_uuid", old.File.UUID, "envoy_uuid", enr.File.UUID)
	return a.use(enr)
}

func (a *Agent) saveStatus(err error) {
	enr := a.Enrollment()
	st, _ := ReadStatus(enr.Dir)
	now := a.cfg.Now().UTC()
	st.LastAttempt = now
	if err == nil {
		st.LastCheckin, st.LastError = now, ""
	} else {
		st.LastError = err.Error()
	}
	if werr := writeJSON(filepath.Join(enr.Dir, StatusName), st, 0o644); werr != nil {
		a.logger.Warn("save status", "err", werr)
	}
}

// Run checks in every interval (with ±10% jitter) until ctx is done, backs
// off exponentially (1s doubling, capped at MaxBackoff, with jitter) on
// errors, and returns a *RevokedError when the server refuses this envoy
// for good, or update.ErrRestartRequired when Config.Update replaced the
// binary but could not restart into it (Windows). It returns nil when ctx
// is done.
func (a *Agent) Run(ctx context.Context) error {
	backoff := min(time.Second, a.cfg.MaxBackoff)
	for {
		res, err := a.CheckinOnce(ctx)
		var wait time.Duration
		var rev *RevokedError
		switch {
		case errors.As(err, &rev):
			a.logger.Error("this envoy is revoked: stopping", "envoy_uuid", rev.UUID, "err", rev.Reason)
			return err
		case errors.Is(err, update.ErrRestartRequired):
			// The binary was replaced but this process cannot exec it
			// (Windows): exit, and the service manager starts the new one.
			a.logger.Info("agent updated: stopping so that the service manager starts the new binary")
			return err
		case ctx.Err() != nil:
			return nil
		case err != nil:
			wait = jitter(backoff)
			a.logger.Warn("check-in failed", "err", err, "retry_in", wait.Round(time.Millisecond))
			backoff = min(backoff*2, a.cfg.MaxBackoff)
		default:
			backoff = min(time.Second, a.cfg.MaxBackoff)
			next := res.Next
			if next <= 0 {
				next = a.Enrollment().Interval
			}
			wait = jitter(next)
			a.logger.Debug("checked in", "next", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// jitter returns d ± 10%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	span := int64(d) / 5
	if span <= 0 {
		return d
	}
	n, err := rand.Int(rand.Reader, big.NewInt(span))
	if err != nil {
		return d
	}
	return d - time.Duration(span/2) + time.Duration(n.Int64())
}

// explainRefusal asks the server's HTTPS API why it refuses this envoy's
// certificate (a TLS alert carries no reason). It returns "" when the
// server cannot say.
func explainRefusal(enr *Enrollment) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(enr.File.ServerURL, "/")+"/api/v1/agent/self", nil)
	if err != nil {
		return ""
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: enr.HTTPSTLSConfig()}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var self apiv1.AgentSelf
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&self) != nil || self.Accepted {
		return ""
	}
	return self.Message
}
