package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/agentbuild"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/token"
)

// DefaultTokenTTL is the lifetime of a token when none is asked for.
const DefaultTokenTTL = 24 * time.Hour

func (a *API) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	var req apiv1.TokenCreateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pattern := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(req.Pattern)), ".")
	if pattern == "" {
		writeError(w, http.StatusBadRequest, "pattern: required (a hostname or a glob such as *.web.example.com)")
		return
	}
	if _, err := policy.CompileGlob(pattern); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("pattern: %v", err))
		return
	}
	if len(req.Note) > 500 {
		writeError(w, http.StatusBadRequest, "note: at most 500 characters")
		return
	}
	ttl := DefaultTokenTTL
	var maxTTL time.Duration
	if p := a.cfg.Policy(); p != nil {
		maxTTL = p.TokenMaxTTL()
	}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl: %q is not a positive duration (examples: 30m, 24h)", req.TTL))
			return
		}
		if maxTTL > 0 && d > maxTTL {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl: %s is longer than the policy's tokens.max_ttl of %s", d, maxTTL))
			return
		}
		ttl = d
	} else if maxTTL > 0 && ttl > maxTTL {
		ttl = maxTTL
	}
	tok := token.Generate()
	hash, err := token.Hash(tok)
	if err != nil {
		a.internal(w, "create token", err)
		return
	}
	now := a.cfg.Now().UTC()
	t := store.Token{ID: tok.ID, SecretHash: hash, Pattern: pattern, Note: req.Note, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	ev := store.AuditEvent{At: now, Type: store.AuditTokenCreated, Result: "ok", TokenID: tok.ID, Replica: a.cfg.Replica,
		Actor: callerOf(r).name, Details: map[string]string{"pattern": pattern, "expires_at": t.ExpiresAt.Format(time.RFC3339)}}
	if err := a.cfg.Store.CreateToken(r.Context(), t, ev); err != nil {
		a.internal(w, "create token", err)
		return
	}
	a.log.Info("token created", "token_id", tok.ID, "pattern", pattern)
	out := apiv1.TokenCreated{ID: tok.ID, Token: tok.String(), Pattern: pattern, Note: req.Note, ExpiresAt: t.ExpiresAt}
	if a.cfg.OneLiner != nil {
		if out.Command, err = a.cfg.OneLiner(tok.String()); err != nil {
			// The token exists: answer with it rather than lose it.
			a.log.Error("render the bootstrap one-liner", "token_id", tok.ID, "err", err)
		}
	}
	writeJSON(w, http.StatusCreated, out)
}

func (a *API) handleTokenList(w http.ResponseWriter, r *http.Request) {
	ts, err := a.cfg.Store.ListTokens(r.Context())
	if err != nil {
		a.internal(w, "list tokens", err)
		return
	}
	now := a.cfg.Now()
	out := make([]apiv1.Token, 0, len(ts))
	for _, t := range ts {
		out = append(out, TokenView(t, now))
	}
	writeJSON(w, http.StatusOK, out)
}

// TokenView converts a stored token (never its hash) to its wire form.
func TokenView(t store.Token, now time.Time) apiv1.Token {
	v := apiv1.Token{ID: t.ID, Pattern: t.Pattern, Note: t.Note, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, UsedBy: t.UsedBy}
	switch {
	case !t.RevokedAt.IsZero():
		v.State = "revoked"
	case !t.UsedAt.IsZero():
		v.State = "used"
	case !now.Before(t.ExpiresAt):
		v.State = "expired"
	default:
		v.State = "unused"
	}
	v.UsedAt = timePtr(t.UsedAt)
	v.RevokedAt = timePtr(t.RevokedAt)
	return v
}

func (a *API) handleTokenRevoke(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.PathValue("id"), token.Prefix)
	if tok, err := token.Parse(r.PathValue("id")); err == nil {
		id = tok.ID // a whole token was pasted: use its id only
	}
	if !token.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q is not a token id (10 characters, as shown by `vigocli tokens list`)", id))
		return
	}
	now := a.cfg.Now().UTC()
	ev := store.AuditEvent{At: now, Type: store.AuditTokenRevoked, Result: "ok", TokenID: id, Replica: a.cfg.Replica, Actor: callerOf(r).name}
	err := a.cfg.Store.RevokeToken(r.Context(), id, now, ev)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no token with id %s", id))
	case errors.Is(err, store.ErrTokenUnavailable):
		writeError(w, http.StatusConflict, fmt.Sprintf("token %s is already used or revoked", id))
	case err != nil:
		a.internal(w, "revoke token", err)
	default:
		a.log.Info("token revoked", "token_id", id)
		t, err := a.cfg.Store.GetToken(r.Context(), id)
		if err != nil {
			a.internal(w, "revoke token", err)
			return
		}
		writeJSON(w, http.StatusOK, TokenView(t, now))
	}
}

func (a *API) handleEnvoyList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.EnvoyFilter{Status: q.Get("status")}
	if f.Status != "" && f.Status != store.StatusActive && f.Status != store.StatusRevoked {
		writeError(w, http.StatusBadRequest, "status: must be active or revoked")
		return
	}
	var glob *policy.Glob
	if h := strings.ToLower(q.Get("hostname")); h != "" {
		g, err := policy.CompileGlob(h)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("hostname: %v", err))
			return
		}
		if !strings.ContainsAny(h, "*?") {
			f.Hostname = h
		}
		glob = &g
	}
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "limit: must be a non-negative integer")
			return
		}
		limit = n
	}
	es, err := a.cfg.Store.ListEnvoys(r.Context(), f)
	if err != nil {
		a.internal(w, "list envoys", err)
		return
	}
	out := make([]apiv1.Envoy, 0, len(es))
	for _, e := range es {
		if glob != nil && !glob.Match(e.Hostname) {
			continue
		}
		out = append(out, EnvoyView(e))
		if limit > 0 && len(out) == limit {
			break
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// EnvoyView converts a stored envoy to its wire form.
func EnvoyView(e store.Envoy) apiv1.Envoy {
	return apiv1.Envoy{
		UUID: e.UUID, Hostname: e.Hostname, Status: e.Status, Method: e.Method, Rule: e.Rule,
		PolicyRevision: e.PolicyRevision, SourceIP: e.SourceIP, OS: e.OS, Arch: e.Arch, TokenID: e.TokenID,
		CertSerial: e.CertSerial, CertNotAfter: e.CertNotAfter, CreatedAt: e.CreatedAt,
		LastSeen: timePtr(e.LastSeen), AgentVersion: e.AgentVersion, LastAddr: e.LastAddr,
		RevokedAt: timePtr(e.RevokedAt), RevokedReason: e.RevokedReason, RevokedRevision: e.RevokedRevision,
		ReplacedBy: e.ReplacedBy, Rebootstrap: e.Rebootstrap, UpdateVersion: e.UpdateVersion, UpdateAllowDowngrade: e.UpdateAllowDowngrade,
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// lookupEnvoy finds an envoy by UUID, or by hostname (the active one).
func (a *API) lookupEnvoy(w http.ResponseWriter, r *http.Request) (store.Envoy, bool) {
	id := strings.ToLower(r.PathValue("id"))
	e, err := a.cfg.Store.GetEnvoy(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		h, herr := policy.NormalizeHostname(id)
		if herr == nil {
			e, err = a.cfg.Store.GetActiveEnvoyByHostname(r.Context(), h)
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no envoy with uuid or active hostname %q", id))
		return e, false
	case err != nil:
		a.internal(w, "look up envoy", err)
		return e, false
	}
	return e, true
}

func (a *API) handleEnvoyShow(w http.ResponseWriter, r *http.Request) {
	if e, ok := a.lookupEnvoy(w, r); ok {
		writeJSON(w, http.StatusOK, EnvoyView(e))
	}
}

func (a *API) handleEnvoyRevoke(w http.ResponseWriter, r *http.Request) {
	var req apiv1.EnvoyRevokeRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, http.StatusBadRequest, "reason: required")
		return
	}
	e, ok := a.lookupEnvoy(w, r)
	if !ok {
		return
	}
	if e.Status != store.StatusActive {
		writeError(w, http.StatusConflict, fmt.Sprintf("envoy %s is already revoked: %s", e.UUID, e.RevokedReason))
		return
	}
	if _, err := a.cfg.Store.RevokeEnvoys(r.Context(), []store.Revocation{{UUID: e.UUID, Reason: req.Reason, At: a.cfg.Now().UTC(), Replica: a.cfg.Replica, Actor: callerOf(r).name}}); err != nil {
		a.internal(w, "revoke envoy", err)
		return
	}
	a.log.Info("envoy revoked", "envoy_uuid", e.UUID, "hostname", e.Hostname)
	a.respondEnvoy(w, r, e.UUID)
}

func (a *API) handleEnvoyRebootstrap(w http.ResponseWriter, r *http.Request) {
	a.setFlags(w, r, func(f *store.EnvoyFlags) { f.Rebootstrap = true }, store.AuditEnvoyRebootstrap, nil)
}

func (a *API) handleEnvoyUpdate(w http.ResponseWriter, r *http.Request) {
	var req apiv1.EnvoyUpdateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Version == "" || len(req.Version) > 64 || strings.ContainsAny(req.Version, " \t\n/") {
		writeError(w, http.StatusBadRequest, "version: required, e.g. v1.2.3")
		return
	}
	details := map[string]string{"version": req.Version}
	if req.AllowDowngrade {
		details["allow_downgrade"] = "true"
	}
	// The agent refuses a version older than its own (or that it cannot
	// order against its own) unless the operator allows a downgrade: say
	// so now rather than let every check-in fail.
	check := func(e store.Envoy) error {
		if req.AllowDowngrade || e.AgentVersion == "" || e.AgentVersion == req.Version {
			return nil
		}
		switch c, ok := agentbuild.CompareVersions(req.Version, e.AgentVersion); {
		case !ok:
			return fmt.Errorf("envoy %s runs agent %s, which cannot be ordered against %s (not semantic versions): its agent refuses a possible downgrade unless you allow it (allow_downgrade, vigocli envoys update --allow-downgrade)", e.UUID, e.AgentVersion, req.Version)
		case c < 0:
			return fmt.Errorf("envoy %s runs agent %s, newer than %s: its agent refuses a downgrade unless you allow it (allow_downgrade, vigocli envoys update --allow-downgrade)", e.UUID, e.AgentVersion, req.Version)
		}
		return nil
	}
	a.setFlagsChecked(w, r, check, func(f *store.EnvoyFlags) { f.UpdateVersion, f.UpdateAllowDowngrade = req.Version, req.AllowDowngrade }, store.AuditEnvoyUpdate, details)
}

func (a *API) setFlags(w http.ResponseWriter, r *http.Request, set func(*store.EnvoyFlags), typ string, details map[string]string) {
	a.setFlagsChecked(w, r, nil, set, typ, details)
}

// setFlagsChecked is setFlags with a check of the envoy first: its error
// is the 409 answer.
func (a *API) setFlagsChecked(w http.ResponseWriter, r *http.Request, check func(store.Envoy) error, set func(*store.EnvoyFlags), typ string, details map[string]string) {
	e, ok := a.lookupEnvoy(w, r)
	if !ok {
		return
	}
	if check != nil {
		if err := check(e); err != nil {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
	}
	f := e.EnvoyFlags
	set(&f)
	ev := store.AuditEvent{At: a.cfg.Now().UTC(), Type: typ, Result: "ok", EnvoyUUID: e.UUID, Hostname: e.Hostname, Replica: a.cfg.Replica,
		Actor: callerOf(r).name, Details: details}
	err := a.cfg.Store.SetEnvoyFlags(r.Context(), e.UUID, f, ev)
	switch {
	case errors.Is(err, store.ErrEnvoyRevoked):
		writeError(w, http.StatusConflict, fmt.Sprintf("envoy %s is revoked: %s", e.UUID, e.RevokedReason))
		return
	case err != nil:
		a.internal(w, "set envoy flags", err)
		return
	}
	a.respondEnvoy(w, r, e.UUID)
}

func (a *API) respondEnvoy(w http.ResponseWriter, r *http.Request, uuid string) {
	e, err := a.cfg.Store.GetEnvoy(r.Context(), uuid)
	if err != nil {
		a.internal(w, "get envoy", err)
		return
	}
	writeJSON(w, http.StatusOK, EnvoyView(e))
}

func (a *API) handleAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since time.Time
	if s := q.Get("since"); s != "" {
		t, err := ParseSince(s, a.cfg.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		since = t
	}
	limit := 1000
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "limit: must be a non-negative integer")
			return
		}
		limit = n
	}
	var evs []store.AuditEvent
	var err error
	switch order := q.Get("order"); order {
	case "", "oldest":
		if q.Get("type") != "" || q.Get("before") != "" {
			writeError(w, http.StatusBadRequest, "type and before go with order=newest")
			return
		}
		evs, err = a.cfg.Store.ListAudit(r.Context(), since, limit)
	case "newest":
		// Newest first, in pages: before=ID continues below the smallest
		// ID of the previous page. A page is bounded so that a client
		// reading a busy week does not hold the database (or the answer)
		// for long.
		if limit == 0 || limit > maxAuditPage {
			limit = maxAuditPage
		}
		aq := store.AuditQuery{Type: q.Get("type"), Since: since, Limit: limit}
		if b := q.Get("before"); b != "" {
			n, perr := strconv.ParseInt(b, 10, 64)
			if perr != nil || n <= 0 {
				writeError(w, http.StatusBadRequest, "before: must be a positive event id")
				return
			}
			aq.Before = n
		}
		evs, err = a.cfg.Store.ListAuditNewest(r.Context(), aq)
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("order: %q must be oldest or newest", order))
		return
	}
	if err != nil {
		a.internal(w, "list audit", err)
		return
	}
	out := make([]apiv1.AuditEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, apiv1.AuditEvent{ID: e.ID, At: e.At, Type: e.Type, Result: e.Result, Hostname: e.Hostname,
			SourceIP: e.SourceIP, Method: e.Method, Rule: e.Rule, Revision: e.Revision, TokenID: e.TokenID,
			EnvoyUUID: e.EnvoyUUID, Reason: e.Reason, Replica: e.Replica, Actor: e.Actor, Details: e.Details})
	}
	writeJSON(w, http.StatusOK, out)
}

// maxAuditPage is the most events one GET /api/v1/audit?order=newest
// answers.
const maxAuditPage = 5000

// ParseSince accepts an RFC 3339 time or a duration back from now ("1h").
func ParseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("since: %q is neither a duration (1h, 30m) nor an RFC 3339 time", url.QueryEscape(s))
}

func (a *API) handlePolicyStatus(w http.ResponseWriter, r *http.Request) {
	if a.cfg.PolicyCtl == nil {
		writeError(w, http.StatusNotFound, "no policy source is configured: set policy.dir or policy.git")
		return
	}
	writeJSON(w, http.StatusOK, a.cfg.PolicyCtl.Status())
}

func (a *API) handlePolicySync(w http.ResponseWriter, r *http.Request) {
	if a.cfg.PolicyCtl == nil {
		writeError(w, http.StatusNotFound, "no policy source is configured: set policy.dir or policy.git")
		return
	}
	st, err := a.cfg.PolicyCtl.SyncNow(r.Context())
	if err != nil && r.Context().Err() != nil {
		writeError(w, http.StatusGatewayTimeout, "sync did not finish: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, apiv1.PolicySyncResult{Status: st})
}

// adminTokenName matches the names of admin tokens: what audit events show.
var adminTokenName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func (a *API) handleAdminTokenCreate(w http.ResponseWriter, r *http.Request) {
	var req apiv1.AdminTokenCreateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch {
	case !adminTokenName.MatchString(req.Name):
		writeError(w, http.StatusBadRequest, "name: 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit (such as ci-github)")
		return
	case req.Name == ServerTokenName:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("name: %q names the server's own admin token in audit events; choose another", ServerTokenName))
		return
	}
	if req.Role == "" {
		req.Role = store.RoleReadOnly
	}
	if req.Role != store.RoleAdmin && req.Role != store.RoleReadOnly {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("role: %q must be %s or %s", req.Role, store.RoleReadOnly, store.RoleAdmin))
		return
	}
	tok := token.Generate()
	now := a.cfg.Now().UTC()
	t := store.AdminToken{ID: tok.ID, Name: req.Name, Role: req.Role, SecretHash: token.AdminHash(tok), CreatedAt: now}
	ev := store.AuditEvent{At: now, Type: store.AuditAdminTokenCreated, Result: "ok", TokenID: tok.ID, Replica: a.cfg.Replica,
		Actor: callerOf(r).name, Details: map[string]string{"name": req.Name, "role": req.Role}}
	err := a.cfg.Store.CreateAdminToken(r.Context(), t, ev)
	switch {
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, fmt.Sprintf("an admin token named %q exists already: revoke it first, or choose another name", req.Name))
		return
	case err != nil:
		a.internal(w, "create admin token", err)
		return
	}
	a.log.Info("admin token created", "token_id", tok.ID, "name", req.Name, "role", req.Role)
	writeJSON(w, http.StatusCreated, apiv1.AdminTokenCreated{AdminToken: adminTokenView(t), Token: token.AdminString(tok)})
}

func (a *API) handleAdminTokenList(w http.ResponseWriter, r *http.Request) {
	ts, err := a.cfg.Store.ListAdminTokens(r.Context())
	if err != nil {
		a.internal(w, "list admin tokens", err)
		return
	}
	out := make([]apiv1.AdminToken, 0, len(ts))
	for _, t := range ts {
		out = append(out, adminTokenView(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) handleAdminTokenRevoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	now := a.cfg.Now().UTC()
	ev := store.AuditEvent{At: now, Type: store.AuditAdminTokenRevoked, Result: "ok", Replica: a.cfg.Replica,
		Actor: callerOf(r).name, Details: map[string]string{"name": name}}
	t, err := a.cfg.Store.RevokeAdminToken(r.Context(), name, now, ev)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no active admin token named %q (vigocli admin-tokens list)", name))
		return
	case err != nil:
		a.internal(w, "revoke admin token", err)
		return
	}
	a.log.Info("admin token revoked", "token_id", t.ID, "name", t.Name)
	writeJSON(w, http.StatusOK, adminTokenView(t))
}

// adminTokenView converts a stored admin token (never its hash) to its
// wire form.
func adminTokenView(t store.AdminToken) apiv1.AdminToken {
	return apiv1.AdminToken{Name: t.Name, Role: t.Role, ID: t.ID, CreatedAt: t.CreatedAt, RevokedAt: timePtr(t.RevokedAt)}
}

// handlePolicyExplain decides a registration with the active policy, as
// enrollment would, without enrolling or writing to the audit log (POST
// /api/v1/policy/explain). A token is hypothetical, as in "vigocli policy
// explain --token": valid and bound to its pattern (by default the
// hostname); no token is looked up.
func (a *API) handlePolicyExplain(w http.ResponseWriter, r *http.Request) {
	var req apiv1.ExplainRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Hostname == "" {
		writeError(w, http.StatusBadRequest, "hostname: required")
		return
	}
	pr := policy.Request{Hostname: req.Hostname}
	if req.IP != "" {
		ip, err := netip.ParseAddr(req.IP)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ip: %q is not an IP address", req.IP))
			return
		}
		pr.SourceIP = ip
	}
	if req.Token || req.TokenPattern != "" {
		pat := req.TokenPattern
		if pat == "" {
			pat = req.Hostname
		}
		pr.Token = &policy.TokenInfo{ID: "explain", Pattern: pat}
	}
	writeJSON(w, http.StatusOK, a.cfg.Policy().Decide(pr))
}

// handleVersion answers the server's build (GET /api/v1/version).
func (a *API) handleVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.cfg.Build)
}

func (a *API) internal(w http.ResponseWriter, op string, err error) {
	a.log.Error(op, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error: see the server log")
}
