// Package enroll is the registration use case: it validates a registration
// request, decides it with the active policy and the token store, signs the
// envoy certificate and records the envoy, the token use and the audit event
// in one transaction. It knows nothing of HTTP.
package enroll

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/ratelimit"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/token"
)

// Kind classifies a refusal; the HTTP layer maps it to a status code.
type Kind int

// Refusal kinds.
const (
	KindInvalid  Kind = iota + 1 // malformed request: 400
	KindDenied                   // refused by policy or token: 403
	KindConflict                 // an active envoy has this hostname: 409
	KindInternal                 // server fault: 500
	KindBusy                     // over the token-check ceiling: 429, retry after RetryAfter
)

// Error is a refused registration. Msg is safe to show to the client; Err
// (if any) is for the log.
type Error struct {
	Kind Kind
	Msg  string
	Err  error
	// RetryAfter is when to try again (KindBusy).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Config configures an Enroller. Store, CA and Policy are required.
type Config struct {
	Store store.Store
	CA    *ca.CA
	// Policy returns the active policy, or nil when none has ever been valid.
	Policy func() *policy.Policy
	// Replica names this server in audit events.
	Replica string
	// GRPCAddress is told to agents ("host:1530").
	GRPCAddress string
	// CheckinInterval is told to agents (default 1m).
	CheckinInterval time.Duration
	// ServerPublicKey is the Ed25519 key that signs check-in responses.
	ServerPublicKey ed25519.PublicKey
	// SigningKeyPEM is the offline agent signing public key, if configured.
	SigningKeyPEM func() string
	// Now returns the time (default time.Now).
	Now func() time.Time
	// Logger (nil discards).
	Logger *slog.Logger
	// Registerer for metrics (nil = none).
	Registerer prometheus.Registerer
	// OnDenied, when set, is told of every refused registration with its
	// reason (for notifications); it must not block.
	OnDenied func(reason string)
	// TokenChecks bounds registrations carrying a token, the bcrypt path,
	// for this whole server (zero: no bound). A burst of them is refused
	// with KindBusy instead of taking every core.
	TokenChecks ratelimit.Limit
}

// Enroller registers envoys.
type Enroller struct {
	cfg      Config
	log      *slog.Logger
	bcrypt   chan struct{}
	ceiling  *ratelimit.Shared
	regs     *prometheus.CounterVec
	tokenChk *prometheus.CounterVec
}

// New returns an Enroller.
func New(cfg Config) (*Enroller, error) {
	if cfg.Store == nil || cfg.CA == nil || cfg.Policy == nil {
		return nil, errors.New("enroll: Store, CA and Policy are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CheckinInterval == 0 {
		cfg.CheckinInterval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Enroller{
		cfg: cfg,
		log: cfg.Logger.With("component", "enroll"),
		// bcrypt is CPU-bound: at most one check per core, so a burst of
		// token registrations cannot starve TLS handshakes and check-ins.
		bcrypt:  make(chan struct{}, runtime.GOMAXPROCS(0)),
		ceiling: ratelimit.NewShared(cfg.TokenChecks, cfg.Now),
		regs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigo_registrations_total", Help: "Registration attempts by method and result.",
		}, []string{"method", "result"}),
		tokenChk: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigo_token_checks_total", Help: "Token checks by result: ok, invalid (unknown id or wrong secret, alike), used, expired, revoked.",
		}, []string{"result"}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{e.regs, e.tokenChk} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Request is a registration with its source address.
type Request struct {
	apiv1.RegisterRequest
	// SourceIP is where the request came from; the invalid Addr means
	// unknown (no trusted_enrollment CIDR contains it).
	SourceIP netip.Addr
}

// Field size limits of a registration request, in bytes. Each is several
// times what a real agent sends; they exist so that an anonymous caller
// cannot make the server store, log or answer with a large value (the body
// limit alone allows 64 KiB in any one field).
const (
	maxPublicKey = 1 << 10 // an Ed25519 PKIX PEM is 113 bytes
	maxCSR       = 4 << 10 // an Ed25519 CSR PEM with a 253-byte name is under 1 KiB
	maxToken     = 128     // a token is 45 bytes
	maxSignature = 128     // base64 of 64 bytes is 88
)

// Validate checks the request's form; it returns a KindInvalid *Error naming
// the field. Messages never repeat an unbounded or unchecked value: at most
// a normalised hostname, or a value of bounded length quoted with %q (so
// control characters are escaped).
func Validate(r *apiv1.RegisterRequest) (hostname string, pub ed25519.PublicKey, err error) {
	bad := func(format string, a ...any) error { return &Error{Kind: KindInvalid, Msg: fmt.Sprintf(format, a...)} }
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"public_key", r.PublicKey, maxPublicKey}, {"csr", r.CSR, maxCSR},
		{"token", r.Token, maxToken}, {"previous_signature", r.PreviousSignature, maxSignature},
	} {
		if len(f.value) > f.max {
			return "", nil, bad("%s: longer than %d bytes", f.name, f.max)
		}
	}
	if r.PreviousUUID != "" && !isUUID(r.PreviousUUID) {
		return "", nil, bad("previous_uuid: not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
	}
	if r.PreviousUUID != "" || r.PreviousSignature != "" {
		if sig, err := base64.StdEncoding.DecodeString(r.PreviousSignature); err != nil || len(sig) != ed25519.SignatureSize {
			return "", nil, bad("previous_signature: required with previous_uuid, the base64 of a %d-byte Ed25519 signature", ed25519.SignatureSize)
		}
		if r.PreviousUUID == "" {
			return "", nil, bad("previous_uuid: required with previous_signature")
		}
	}
	if r.Hostname == "" {
		return "", nil, bad("hostname: required")
	}
	hostname, herr := policy.NormalizeHostname(r.Hostname)
	if herr != nil {
		return "", nil, bad("hostname: %v", herr)
	}
	if !validWord(r.OS) {
		return "", nil, bad("os: required, lower-case letters and digits (e.g. linux)")
	}
	if !validWord(r.Arch) {
		return "", nil, bad("arch: required, lower-case letters and digits (e.g. amd64)")
	}
	if r.PublicKey == "" {
		return "", nil, bad("public_key: required (PEM, PKIX Ed25519)")
	}
	pub, perr := pemkey.ParsePublic([]byte(r.PublicKey))
	if perr != nil {
		return "", nil, bad("public_key: %v", perr)
	}
	if r.CSR == "" {
		return "", nil, bad("csr: required (PEM CERTIFICATE REQUEST)")
	}
	cb, _ := pem.Decode([]byte(r.CSR))
	if cb == nil || cb.Type != "CERTIFICATE REQUEST" {
		return "", nil, bad("csr: not a PEM CERTIFICATE REQUEST block")
	}
	csr, cerr := x509.ParseCertificateRequest(cb.Bytes)
	if cerr != nil {
		return "", nil, bad("csr: %v", cerr)
	}
	if err := csr.CheckSignature(); err != nil {
		return "", nil, bad("csr: signature does not verify: %v", err)
	}
	if cpub, ok := csr.PublicKey.(ed25519.PublicKey); !ok || !cpub.Equal(pub) {
		return "", nil, bad("csr: its key is not public_key")
	}
	cn, cnerr := policy.NormalizeHostname(csr.Subject.CommonName)
	if cnerr != nil {
		return "", nil, bad("csr: common name is not a valid hostname (it must be the hostname %q)", hostname)
	}
	if cn != hostname {
		return "", nil, bad("csr: common name %q is not the hostname %q", cn, hostname)
	}
	return hostname, pub, nil
}

// isUUID reports whether s is a UUID in its textual form, either case.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func validWord(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Register decides a registration and, when allowed, enrolls the envoy.
func (e *Enroller) Register(ctx context.Context, req Request) (*apiv1.RegisterResponse, error) {
	now := e.cfg.Now()
	hostname, pub, err := Validate(&req.RegisterRequest)
	if err != nil {
		e.regs.WithLabelValues("", "invalid").Inc()
		return nil, err
	}
	audit := store.AuditEvent{
		At: now, Type: store.AuditRegistration, Hostname: hostname,
		SourceIP: addrString(req.SourceIP), Replica: e.cfg.Replica,
		Details: map[string]string{"os": req.OS, "arch": req.Arch},
	}
	if req.Force {
		audit.Details["force"] = "true"
	}
	deny := func(kind Kind, method, msg string) error {
		audit.Result, audit.Reason = "denied", msg
		if audit.Method == "" {
			audit.Method = method
		}
		if err := e.cfg.Store.AppendAudit(ctx, audit); err != nil {
			e.log.Error("write audit event", "err", err)
		}
		e.regs.WithLabelValues(method, "denied").Inc()
		if e.cfg.OnDenied != nil {
			e.cfg.OnDenied(msg)
		}
		e.log.Warn("registration refused", "hostname", hostname, "source_ip", audit.SourceIP, "token_id", audit.TokenID, "reason", msg)
		return &Error{Kind: kind, Msg: msg}
	}

	// A rebootstrap proves the old identity: the envoy was asked to
	// rebootstrap and signs the new key with its old one.
	var prev *store.Envoy
	if req.PreviousUUID != "" {
		env, msg, err := e.checkRebootstrap(ctx, &req.RegisterRequest, hostname)
		if err != nil {
			return nil, &Error{Kind: KindInternal, Msg: "internal error", Err: err}
		}
		if msg != "" {
			return nil, deny(KindDenied, MethodRebootstrap, msg)
		}
		prev = &env
		audit.Details["previous_uuid"] = env.UUID
	}

	var tokInfo *policy.TokenInfo
	tokProblem := ""
	if req.Token != "" {
		tok, perr := token.Parse(req.Token)
		if perr != nil {
			return nil, deny(KindDenied, "token", "token is not valid")
		}
		// Before any lookup or bcrypt work, and without an audit row:
		// the ceiling is there so that a flood costs little.
		if ok, wait := e.ceiling.Take(); !ok {
			e.regs.WithLabelValues("token", "busy").Inc()
			return nil, &Error{Kind: KindBusy, RetryAfter: wait,
				Msg: "too many registrations with a token on this server right now"}
		}
		audit.TokenID = tok.ID
		tokInfo, tokProblem, err = e.checkToken(ctx, tok, now)
		if err != nil {
			return nil, &Error{Kind: KindInternal, Msg: "internal error", Err: err}
		}
	}

	p := e.cfg.Policy()
	d := p.Decide(policy.Request{Hostname: hostname, SourceIP: req.SourceIP, Token: tokInfo})
	if !d.Allowed && prev != nil {
		// A proven rebootstrap stands in for a token, but never for a
		// hostname the policy revokes.
		if _, revoked := p.RevokedHostname(hostname); !revoked {
			d = policy.Decision{Allowed: true, Method: MethodRebootstrap, Rule: "envoy " + prev.UUID, Revision: p.Revision(),
				Reason: "rebootstrap of envoy " + prev.UUID + " proven with its key"}
		}
	}
	audit.Method, audit.Rule, audit.Revision = d.Method, d.Rule, d.Revision
	if !d.Allowed {
		reason := d.Reason
		if tokProblem != "" && !strings.Contains(reason, "revoked by policy") {
			reason = tokProblem
		}
		return nil, deny(KindDenied, d.Method, reason)
	}

	// Who may replace an active envoy is the admitting rule's to say
	// (replace: any | token | proof). Force is withheld from the store when
	// the rule does not allow it here, so that the store's own check (one
	// active envoy per hostname, in the transaction) refuses a replacement,
	// and only a replacement.
	force, replaceRefusal := req.Force, ""
	if force && prev == nil && d.Replace != "" && d.Replace != policy.ReplaceAny {
		if d.Replace == policy.ReplaceToken && tokInfo != nil {
			if td := p.DecideToken(hostname, tokInfo); td.Allowed {
				d = td // the token authorizes the replacement, and is consumed
				audit.Method, audit.Rule = d.Method, d.Rule
			}
		}
		if d.Replace != policy.ReplaceAny {
			force = false
			switch d.Replace {
			case policy.ReplaceToken:
				replaceRefusal = fmt.Sprintf("an active envoy with this hostname exists, and %s lets only a token bound to %s (vigocli tokens generate --pattern %s) or that envoy's own proof (vigocli envoys rebootstrap) replace it (replace: token)", d.Rule, hostname, hostname)
			default:
				replaceRefusal = fmt.Sprintf("an active envoy with this hostname exists, and %s lets only that envoy replace itself (replace: proof; vigocli envoys rebootstrap); if its key is lost, revoke it first (vigocli envoys revoke)", d.Rule)
			}
		}
	}

	id := NewUUID()
	validity := policy.DefaultCertValidity
	if p != nil {
		validity = p.CertValidity()
	}
	cert, err := e.cfg.CA.SignEnvoy(ca.EnvoyParams{PublicKey: pub, Hostname: hostname, UUID: id, NotAfter: now.Add(validity)})
	if err != nil {
		return nil, &Error{Kind: KindInternal, Msg: "internal error", Err: err}
	}
	env := store.Envoy{
		UUID: id, Hostname: hostname, PublicKey: pub, CertSerial: ca.SerialHex(cert), CertNotAfter: cert.NotAfter,
		OS: req.OS, Arch: req.Arch, SourceIP: addrString(req.SourceIP), Method: d.Method, Rule: d.Rule,
		PolicyRevision: d.Revision, CreatedAt: now,
	}
	tokenID := ""
	if d.Method == "token" {
		tokenID = tokInfo.ID
		env.TokenID = tokenID
	}
	audit.Result, audit.EnvoyUUID, audit.Reason = "allowed", id, d.Reason
	params := store.EnrollParams{Envoy: env, TokenID: tokenID, Force: force, Now: now, Audit: audit}
	if prev != nil {
		// The old envoy is replaced in the same transaction, so a failed
		// registration leaves it active and the agent can retry.
		params.Force, params.ReplaceReason = true, "rebootstrapped"
	}
	replaced, err := e.cfg.Store.Enroll(ctx, params)
	switch {
	case errors.Is(err, store.ErrHostnameTaken) && replaceRefusal != "":
		return nil, deny(KindConflict, d.Method, replaceRefusal)
	case errors.Is(err, store.ErrHostnameTaken):
		return nil, deny(KindConflict, d.Method, "an active envoy with this hostname already exists; re-run with --force to replace it (the old envoy is revoked)")
	case errors.Is(err, store.ErrTokenUnavailable):
		e.tokenChk.WithLabelValues("used").Inc()
		return nil, deny(KindDenied, d.Method, fmt.Sprintf("token %s has already been used", tokenID))
	case err != nil:
		return nil, &Error{Kind: KindInternal, Msg: "internal error", Err: err}
	}
	resp := &apiv1.RegisterResponse{
		UUID: id, Hostname: hostname,
		Certificate: string(ca.EncodeCertPEM(cert)), CA: string(e.cfg.CA.TrustPEM()),
		GRPCAddress: e.cfg.GRPCAddress, CheckinInterval: e.cfg.CheckinInterval.String(),
		Method: d.Method, Rule: d.Rule, PolicyRevision: d.Revision,
	}
	if e.cfg.ServerPublicKey != nil {
		resp.ServerPublicKey = string(pemkey.MarshalPublic(e.cfg.ServerPublicKey))
	}
	if e.cfg.SigningKeyPEM != nil {
		resp.SigningKey = e.cfg.SigningKeyPEM()
	}
	for _, r := range replaced {
		resp.Replaced = append(resp.Replaced, r.UUID)
	}
	e.regs.WithLabelValues(d.Method, "allowed").Inc()
	e.log.Info("envoy enrolled", "envoy_uuid", id, "hostname", hostname, "source_ip", env.SourceIP, "method", d.Method, "rule", d.Rule, "revision", d.Revision, "token_id", tokenID)
	return resp, nil
}

// addrString is a source address as recorded: "" for no address (a proxy
// named no client that parses), never "invalid IP".
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// MethodRebootstrap is the method of an enrollment admitted by a proven
// rebootstrap rather than by a policy rule or a token.
const MethodRebootstrap = "rebootstrap"

// checkRebootstrap verifies a rebootstrap: the previous envoy exists, is
// active, was asked to rebootstrap, has this hostname, and its key signed
// the new public key. It returns a refusal message, or "" when proven.
// Validate has checked that PreviousUUID is a UUID and PreviousSignature
// decodes to 64 bytes.
func (e *Enroller) checkRebootstrap(ctx context.Context, r *apiv1.RegisterRequest, hostname string) (store.Envoy, string, error) {
	id := strings.ToLower(r.PreviousUUID)
	prev, err := e.cfg.Store.GetEnvoy(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return prev, fmt.Sprintf("rebootstrap refused: no envoy %s", id), nil
	case err != nil:
		return prev, "", fmt.Errorf("look up envoy %s: %w", id, err)
	case prev.Status != store.StatusActive:
		return prev, fmt.Sprintf("rebootstrap refused: envoy %s is revoked: %s", prev.UUID, prev.RevokedReason), nil
	case !prev.Rebootstrap:
		return prev, fmt.Sprintf("rebootstrap refused: envoy %s was not asked to rebootstrap (vigocli envoys rebootstrap %s)", prev.UUID, prev.UUID), nil
	case prev.Hostname != hostname:
		return prev, fmt.Sprintf("rebootstrap refused: envoy %s is %s, not %s", prev.UUID, prev.Hostname, hostname), nil
	}
	sig, err := base64.StdEncoding.DecodeString(r.PreviousSignature)
	if err != nil || len(prev.PublicKey) != ed25519.PublicKeySize ||
		!ed25519.Verify(prev.PublicKey, apiv1.RebootstrapSigningBytes(r.PreviousUUID, r.Hostname, r.PublicKey), sig) {
		return prev, fmt.Sprintf("rebootstrap refused: previous_signature does not verify with envoy %s's key", prev.UUID), nil
	}
	return prev, "", nil
}

// checkToken looks the token up by id and checks its secret and state. It
// returns the token for Decide when usable, or a refusal reason. Unknown ids
// and wrong secrets get the same answer, the same metric and the same work,
// so a caller learns nothing about which tokens exist; a caller holding the
// secret learns why it is refused.
func (e *Enroller) checkToken(ctx context.Context, tok token.Token, now time.Time) (*policy.TokenInfo, string, error) {
	const invalid = "token is not valid"
	t, err := e.cfg.Store.GetToken(ctx, tok.ID)
	unknown := errors.Is(err, store.ErrNotFound)
	if err != nil && !unknown {
		return nil, "", fmt.Errorf("look up token %s: %w", tok.ID, err)
	}
	select {
	case e.bcrypt <- struct{}{}:
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
	var ok bool
	if unknown {
		// A bcrypt comparison all the same, in the same concurrency
		// limit: skipping it made an unknown id answer tens of
		// milliseconds sooner than a known one (review L1).
		ok = token.CompareUnknown(tok)
	} else {
		ok = token.Compare(t.SecretHash, tok)
	}
	<-e.bcrypt
	switch {
	case !ok:
		// One label for unknown ids and wrong secrets: /metrics may be
		// open to anyone.
		e.tokenChk.WithLabelValues("invalid").Inc()
		return nil, invalid, nil
	case !t.RevokedAt.IsZero():
		e.tokenChk.WithLabelValues("revoked").Inc()
		return nil, fmt.Sprintf("token %s has been revoked", t.ID), nil
	case !t.UsedAt.IsZero():
		e.tokenChk.WithLabelValues("used").Inc()
		return nil, fmt.Sprintf("token %s has already been used", t.ID), nil
	case !now.Before(t.ExpiresAt):
		e.tokenChk.WithLabelValues("expired").Inc()
		return nil, fmt.Sprintf("token %s expired at %s", t.ID, t.ExpiresAt.UTC().Format(time.RFC3339)), nil
	}
	e.tokenChk.WithLabelValues("ok").Inc()
	return &policy.TokenInfo{ID: t.ID, Pattern: t.Pattern}, "", nil
}

// NewUUID returns a random (version 4) UUID, as envoys are named.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
