package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/agentbuild"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/token"
)

// Kinds of refusal, for the edges to translate (HTTP 400, 404, 409).
var (
	// ErrInvalid marks a request with a bad value.
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound marks a request for something that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict marks a request that the current state refuses (an
	// envoy already revoked, a token already used).
	ErrConflict = errors.New("conflict")
)

// Error is a refused operation. Its message is safe to show the operator;
// it wraps one of ErrInvalid, ErrNotFound and ErrConflict.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the kind.
func (e *Error) Unwrap() error { return e.Kind }

func refuse(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// DefaultTokenTTL is the lifetime of a token when none is asked for.
const DefaultTokenTTL = 24 * time.Hour

// Config configures Ops. Store is required.
type Config struct {
	Store store.Store
	// Policy returns the active policy (nil when none): its tokens.max_ttl
	// bounds token lifetimes.
	Policy func() *policy.Policy
	// OneLiner renders the bootstrap one-liner for a token ("" for hosts
	// that need none): bootstrap.OneLiner with the server's URL and pins.
	// nil: no one-liner is printed.
	OneLiner func(token string) (string, error)
	// Replica names this server in audit events.
	Replica string
	// Logger: nil discards logs.
	Logger *slog.Logger
	// Now: nil means time.Now.
	Now func() time.Time
}

// Ops runs the operators' use cases.
type Ops struct {
	cfg Config
	log *slog.Logger
}

// New returns Ops.
func New(cfg Config) (*Ops, error) {
	if cfg.Store == nil {
		return nil, errors.New("admin: Store is required")
	}
	if cfg.Policy == nil {
		cfg.Policy = func() *policy.Policy { return nil }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Ops{cfg: cfg, log: cfg.Logger.With("component", "admin")}, nil
}

// stamp names the actor of an audit event: who did it.
func stamp(ev store.AuditEvent, by Caller) store.AuditEvent {
	ev.Actor = by.Name
	return ev
}

// TokenRequest asks for a one-time enrollment token.
type TokenRequest struct {
	// Pattern is the hostname or glob the token is bound to.
	Pattern string
	// TTL is a Go duration; "" is DefaultTokenTTL (both capped by the
	// policy's tokens.max_ttl).
	TTL  string
	Note string
}

// IssuedToken is a new token: the only time its secret is known.
type IssuedToken struct {
	Token store.Token
	// Secret is the whole token, vt_<id>.<secret>.
	Secret string
	// Command is the bootstrap one-liner that enrolls with it.
	Command string
}

// CreateToken issues a one-time enrollment token.
func (o *Ops) CreateToken(ctx context.Context, by Caller, req TokenRequest) (IssuedToken, error) {
	pattern := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(req.Pattern)), ".")
	if pattern == "" {
		return IssuedToken{}, refuse(ErrInvalid, "pattern: required (a hostname or a glob such as *.web.example.com)")
	}
	if _, err := policy.CompileGlob(pattern); err != nil {
		return IssuedToken{}, refuse(ErrInvalid, "pattern: %v", err)
	}
	if len(req.Note) > 500 {
		return IssuedToken{}, refuse(ErrInvalid, "note: at most 500 characters")
	}
	ttl := DefaultTokenTTL
	var maxTTL time.Duration
	if p := o.cfg.Policy(); p != nil {
		maxTTL = p.TokenMaxTTL()
	}
	if s := strings.TrimSpace(req.TTL); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return IssuedToken{}, refuse(ErrInvalid, "ttl: %s is not a positive duration (examples: 30m, 24h)", clip(s, 32))
		}
		if maxTTL > 0 && d > maxTTL {
			return IssuedToken{}, refuse(ErrInvalid, "ttl: %s is longer than the policy's tokens.max_ttl of %s", d, maxTTL)
		}
		ttl = d
	} else if maxTTL > 0 && ttl > maxTTL {
		ttl = maxTTL
	}
	tok := token.Generate()
	hash, err := token.Hash(tok)
	if err != nil {
		return IssuedToken{}, fmt.Errorf("create token: %w", err)
	}
	now := o.cfg.Now().UTC()
	t := store.Token{ID: tok.ID, SecretHash: hash, Pattern: pattern, Note: req.Note, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	ev := stamp(store.AuditEvent{At: now, Type: store.AuditTokenCreated, Result: "ok", TokenID: tok.ID, Replica: o.cfg.Replica,
		Details: map[string]string{"pattern": pattern, "expires_at": t.ExpiresAt.Format(time.RFC3339)}}, by)
	if err := o.cfg.Store.CreateToken(ctx, t, ev); err != nil {
		return IssuedToken{}, fmt.Errorf("create token: %w", err)
	}
	o.log.Info("token created", "token_id", tok.ID, "pattern", pattern, "actor", by.Name)
	issued := IssuedToken{Token: t, Secret: tok.String()}
	if o.cfg.OneLiner != nil {
		if issued.Command, err = o.cfg.OneLiner(tok.String()); err != nil {
			// The token exists: answer with it rather than lose it.
			o.log.Error("render the bootstrap one-liner", "token_id", tok.ID, "err", err)
		}
	}
	return issued, nil
}

// BootstrapCommand is the one-liner for hosts that the policy admits
// without a token ("" when there is none).
func (o *Ops) BootstrapCommand() string {
	if o.cfg.OneLiner == nil {
		return ""
	}
	line, err := o.cfg.OneLiner("")
	if err != nil {
		o.log.Error("render the bootstrap one-liner", "err", err)
	}
	return line
}

// RevokeToken revokes an unused token, given by its id or as a whole
// token (only its id is used), and returns it.
func (o *Ops) RevokeToken(ctx context.Context, by Caller, idOrToken string) (store.Token, error) {
	id := strings.TrimPrefix(idOrToken, token.Prefix)
	if tok, err := token.Parse(idOrToken); err == nil {
		id = tok.ID // a whole token was pasted: use its id only
	}
	if !token.ValidID(id) {
		return store.Token{}, refuse(ErrInvalid, "%s is not a token id (10 characters, as shown by `vigocli tokens list`)", clip(id, 32))
	}
	now := o.cfg.Now().UTC()
	ev := stamp(store.AuditEvent{At: now, Type: store.AuditTokenRevoked, Result: "ok", TokenID: id, Replica: o.cfg.Replica}, by)
	err := o.cfg.Store.RevokeToken(ctx, id, now, ev)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Token{}, refuse(ErrNotFound, "no token with id %s", id)
	case errors.Is(err, store.ErrTokenUnavailable):
		return store.Token{}, refuse(ErrConflict, "token %s is already used or revoked", id)
	case err != nil:
		return store.Token{}, fmt.Errorf("revoke token: %w", err)
	}
	o.log.Info("token revoked", "token_id", id, "actor", by.Name)
	t, err := o.cfg.Store.GetToken(ctx, id)
	if err != nil {
		return store.Token{}, fmt.Errorf("revoke token: %w", err)
	}
	return t, nil
}

// TokenState is "revoked", "used", "expired" or "unused" at now.
func TokenState(t store.Token, now time.Time) string {
	switch {
	case !t.RevokedAt.IsZero():
		return "revoked"
	case !t.UsedAt.IsZero():
		return "used"
	case !now.Before(t.ExpiresAt):
		return "expired"
	default:
		return "unused"
	}
}

// Envoy finds an envoy by UUID, or the active envoy of a hostname.
func (o *Ops) Envoy(ctx context.Context, id string) (store.Envoy, error) {
	id = strings.ToLower(id)
	e, err := o.cfg.Store.GetEnvoy(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		if h, herr := policy.NormalizeHostname(id); herr == nil {
			e, err = o.cfg.Store.GetActiveEnvoyByHostname(ctx, h)
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return e, refuse(ErrNotFound, "no envoy with uuid or active hostname %s", clip(id, 100))
	case err != nil:
		return e, fmt.Errorf("look up envoy: %w", err)
	}
	return e, nil
}

// RevokeEnvoy revokes an active envoy (by UUID or active hostname) and
// returns it as revoked. Its next check-in is refused, and its
// certificate at the TLS handshake.
func (o *Ops) RevokeEnvoy(ctx context.Context, by Caller, id, reason string) (store.Envoy, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return store.Envoy{}, refuse(ErrInvalid, "reason: required")
	}
	if len(reason) > 500 {
		return store.Envoy{}, refuse(ErrInvalid, "reason: at most 500 characters")
	}
	e, err := o.Envoy(ctx, id)
	if err != nil {
		return e, err
	}
	if e.Status != store.StatusActive {
		return e, refuse(ErrConflict, "envoy %s is already revoked: %s", e.UUID, e.RevokedReason)
	}
	// The store writes the revocation's audit event, with the actor.
	if _, err := o.cfg.Store.RevokeEnvoys(ctx, []store.Revocation{{UUID: e.UUID, Reason: reason, At: o.cfg.Now().UTC(), Replica: o.cfg.Replica, Actor: by.Name}}); err != nil {
		return e, fmt.Errorf("revoke envoy: %w", err)
	}
	o.log.Info("envoy revoked", "envoy_uuid", e.UUID, "hostname", e.Hostname, "actor", by.Name)
	return o.reread(ctx, e.UUID)
}

// RequestRebootstrap asks an active envoy to enroll again at its next
// check-in.
func (o *Ops) RequestRebootstrap(ctx context.Context, by Caller, id string) (store.Envoy, error) {
	return o.setFlags(ctx, by, id, func(f *store.EnvoyFlags) { f.Rebootstrap = true }, store.AuditEnvoyRebootstrap, nil)
}

// RequestUpdate asks an active envoy to update its agent to version at its
// next check-in. The agent refuses a version older than its own (or one it
// cannot order against its own) unless the operator allows a downgrade:
// such a request is refused now (ErrConflict) rather than failing at every
// check-in.
func (o *Ops) RequestUpdate(ctx context.Context, by Caller, id, version string, allowDowngrade bool) (store.Envoy, error) {
	version = strings.TrimSpace(version)
	if version == "" || len(version) > 64 || strings.ContainsAny(version, " \t\n/") {
		return store.Envoy{}, refuse(ErrInvalid, "version: required, e.g. v1.2.3")
	}
	details := map[string]string{"version": version}
	if allowDowngrade {
		details["allow_downgrade"] = "true"
	}
	check := func(e store.Envoy) error {
		if allowDowngrade || e.AgentVersion == "" || e.AgentVersion == version {
			return nil
		}
		switch c, ok := agentbuild.CompareVersions(version, e.AgentVersion); {
		case !ok:
			return refuse(ErrConflict, "envoy %s runs agent %s, which cannot be ordered against %s (not semantic versions): its agent refuses a possible downgrade unless you allow it (allow_downgrade, vigocli envoys update --allow-downgrade)", e.UUID, e.AgentVersion, version)
		case c < 0:
			return refuse(ErrConflict, "envoy %s runs agent %s, newer than %s: its agent refuses a downgrade unless you allow it (allow_downgrade, vigocli envoys update --allow-downgrade)", e.UUID, e.AgentVersion, version)
		}
		return nil
	}
	return o.setFlagsChecked(ctx, by, id, check, func(f *store.EnvoyFlags) { f.UpdateVersion, f.UpdateAllowDowngrade = version, allowDowngrade }, store.AuditEnvoyUpdate, details)
}

func (o *Ops) setFlags(ctx context.Context, by Caller, id string, set func(*store.EnvoyFlags), typ string, details map[string]string) (store.Envoy, error) {
	return o.setFlagsChecked(ctx, by, id, nil, set, typ, details)
}

// setFlagsChecked is setFlags with a check of the envoy first, whose error
// refuses the request.
func (o *Ops) setFlagsChecked(ctx context.Context, by Caller, id string, check func(store.Envoy) error, set func(*store.EnvoyFlags), typ string, details map[string]string) (store.Envoy, error) {
	e, err := o.Envoy(ctx, id)
	if err != nil {
		return e, err
	}
	if check != nil {
		if err := check(e); err != nil {
			return e, err
		}
	}
	f := e.EnvoyFlags
	set(&f)
	ev := stamp(store.AuditEvent{At: o.cfg.Now().UTC(), Type: typ, Result: "ok", EnvoyUUID: e.UUID, Hostname: e.Hostname, Replica: o.cfg.Replica, Details: details}, by)
	err = o.cfg.Store.SetEnvoyFlags(ctx, e.UUID, f, ev)
	switch {
	case errors.Is(err, store.ErrEnvoyRevoked):
		return e, refuse(ErrConflict, "envoy %s is revoked: %s", e.UUID, e.RevokedReason)
	case err != nil:
		return e, fmt.Errorf("set envoy flags: %w", err)
	}
	o.log.Info("envoy action requested", "envoy_uuid", e.UUID, "hostname", e.Hostname, "action", typ, "actor", by.Name)
	return o.reread(ctx, e.UUID)
}

func (o *Ops) reread(ctx context.Context, uuid string) (store.Envoy, error) {
	e, err := o.cfg.Store.GetEnvoy(ctx, uuid)
	if err != nil {
		return e, fmt.Errorf("get envoy: %w", err)
	}
	return e, nil
}

// clip quotes client input for a message, at most n bytes of it.
func clip(s string, n int) string {
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return fmt.Sprintf("%q", s)
}
