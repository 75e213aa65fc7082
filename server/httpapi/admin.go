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
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/token"
)

// opError answers a refused or failed operation of admin.Ops: its message
// with 400, 404 or 409, or 500 (logged) for anything else.
func (a *API) opError(w http.ResponseWriter, op string, err error) {
	switch {
	case errors.Is(err, admin.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, admin.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, admin.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	default:
		a.internal(w, op, err)
	}
}

func (a *API) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	var req apiv1.TokenCreateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	t, err := a.cfg.Ops.CreateToken(r.Context(), admin.CallerFrom(r.Context()), admin.TokenRequest{Pattern: req.Pattern, TTL: req.TTL, Note: req.Note})
	if err != nil {
		a.opError(w, "create token", err)
		return
	}
	writeJSON(w, http.StatusCreated, apiv1.TokenCreated{
		ID: t.Token.ID, Token: t.Secret, Pattern: t.Token.Pattern, Note: t.Token.Note, ExpiresAt: t.Token.ExpiresAt, Command: t.Command,
	})
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
	v.State = admin.TokenState(t, now)
	v.UsedAt = timePtr(t.UsedAt)
	v.RevokedAt = timePtr(t.RevokedAt)
	return v
}

func (a *API) handleTokenRevoke(w http.ResponseWriter, r *http.Request) {
	t, err := a.cfg.Ops.RevokeToken(r.Context(), admin.CallerFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		a.opError(w, "revoke token", err)
		return
	}
	writeJSON(w, http.StatusOK, TokenView(t, a.cfg.Now()))
}

// handleEnvoyList answers GET /api/v1/envoys: the envoys matching the
// filters (status active|revoked|all, hostname GLOB, method, rule,
// revision, version, stale DURATION: not seen for that long), in an order
// (sort hostname|created|seen, desc=true), a page at a time (limit N,
// after CURSOR: apiv1.Envoy.Cursor of the last envoy of the previous page).
// No parameter lists every envoy by hostname.
func (a *API) handleEnvoyList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	bad := func(msg string) { writeError(w, http.StatusBadRequest, msg) }
	eq := store.EnvoyQuery{Status: q.Get("status"), Method: q.Get("method"), Rule: q.Get("rule"),
		PolicyRevision: q.Get("revision"), AgentVersion: q.Get("version")}
	switch eq.Status {
	case "", store.StatusActive, store.StatusRevoked:
	case "all":
		eq.Status = ""
	default:
		bad("status: must be active, revoked or all")
		return
	}
	var glob *policy.Glob
	if h := strings.ToLower(q.Get("hostname")); h != "" {
		g, err := policy.CompileGlob(h)
		if err != nil {
			bad(fmt.Sprintf("hostname: %v", err))
			return
		}
		glob = &g
	}
	if s := q.Get("stale"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			bad(fmt.Sprintf("stale: %q must be a positive duration (such as 1h)", url.QueryEscape(s)))
			return
		}
		eq.SeenBefore = a.cfg.Now().Add(-d)
	}
	sort := q.Get("sort")
	switch sort {
	case "", apiv1.EnvoySortHostname:
		sort, eq.Sort = apiv1.EnvoySortHostname, store.SortHostname
	case apiv1.EnvoySortCreated:
		eq.Sort = store.SortCreated
	case apiv1.EnvoySortSeen:
		eq.Sort = store.SortSeen
	default:
		bad(fmt.Sprintf("sort: %q must be hostname, created or seen", url.QueryEscape(sort)))
		return
	}
	switch d := q.Get("desc"); d {
	case "", "false":
	case "true":
		eq.Desc = true
	default:
		bad("desc: must be true or false")
		return
	}
	if c := q.Get("after"); c != "" {
		host, at, uuid, err := apiv1.ParseEnvoyCursor(c, sort)
		if err != nil {
			bad("after: " + err.Error())
			return
		}
		eq.After = &store.EnvoyCursor{Hostname: host, Time: at, UUID: uuid}
	}
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			bad("limit: must be a non-negative integer")
			return
		}
		limit = n
	}
	// A glob is matched here, on pages read from the store, until the
	// answer is full: the store's filters are exact.
	eq.Limit = envoyPage
	if glob == nil && limit > 0 {
		eq.Limit = limit
	} else if glob != nil && !strings.ContainsAny(glob.String(), "*?") {
		eq.Search = glob.String() // an exact name narrows the read
	}
	out := []apiv1.Envoy{}
	for {
		es, err := a.cfg.Store.QueryEnvoys(r.Context(), eq)
		if err != nil {
			a.internal(w, "list envoys", err)
			return
		}
		for _, e := range es {
			if glob != nil && !glob.Match(e.Hostname) {
				continue
			}
			out = append(out, EnvoyView(e))
			if limit > 0 && len(out) == limit {
				writeJSON(w, http.StatusOK, out)
				return
			}
		}
		if len(es) < eq.Limit {
			break
		}
		c := eq.Cursor(es[len(es)-1])
		eq.After = &c
	}
	writeJSON(w, http.StatusOK, out)
}

// envoyPage is how many envoys GET /api/v1/envoys reads from the store at
// a time.
const envoyPage = 1000

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

func (a *API) handleEnvoyShow(w http.ResponseWriter, r *http.Request) {
	e, err := a.cfg.Ops.Envoy(r.Context(), r.PathValue("id"))
	if err != nil {
		a.opError(w, "look up envoy", err)
		return
	}
	writeJSON(w, http.StatusOK, EnvoyView(e))
}

func (a *API) handleEnvoyRevoke(w http.ResponseWriter, r *http.Request) {
	var req apiv1.EnvoyRevokeRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	a.respondEnvoy(w, "revoke envoy")(a.cfg.Ops.RevokeEnvoy(r.Context(), admin.CallerFrom(r.Context()), r.PathValue("id"), req.Reason))
}

func (a *API) handleEnvoyRebootstrap(w http.ResponseWriter, r *http.Request) {
	a.respondEnvoy(w, "request rebootstrap")(a.cfg.Ops.RequestRebootstrap(r.Context(), admin.CallerFrom(r.Context()), r.PathValue("id")))
}

func (a *API) handleEnvoyUpdate(w http.ResponseWriter, r *http.Request) {
	var req apiv1.EnvoyUpdateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	a.respondEnvoy(w, "request update")(a.cfg.Ops.RequestUpdate(r.Context(), admin.CallerFrom(r.Context()), r.PathValue("id"), req.Version, req.AllowDowngrade))
}

// respondEnvoy answers with the envoy an operation returned, or its error.
func (a *API) respondEnvoy(w http.ResponseWriter, op string) func(store.Envoy, error) {
	return func(e store.Envoy, err error) {
		if err != nil {
			a.opError(w, op, err)
			return
		}
		writeJSON(w, http.StatusOK, EnvoyView(e))
	}
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
		for _, k := range []string{"type", "before", "after", "hostname", "actor"} {
			if q.Get(k) != "" {
				writeError(w, http.StatusBadRequest, k+" goes with order=newest")
				return
			}
		}
		evs, err = a.cfg.Store.ListAudit(r.Context(), since, limit)
	case "newest":
		// Newest first, in pages: before=CURSOR (apiv1.AuditEvent.Cursor
		// of the last event of the previous page) continues below it. A
		// page is bounded so that a client reading a busy week does not
		// hold the database (or the answer) for long.
		if limit == 0 || limit > maxAuditPage {
			limit = maxAuditPage
		}
		aq := store.AuditQuery{Since: since, Limit: limit, Hostname: strings.ToLower(q.Get("hostname")), Actor: q.Get("actor")}
		for _, t := range q["type"] {
			if t != "" {
				aq.Types = append(aq.Types, t)
			}
		}
		// before=CURSOR: the page below it; after=CURSOR: the events newer
		// than it (the newest limit of them), what a follower polls for.
		for _, k := range []string{"before", "after"} {
			b := q.Get(k)
			if b == "" {
				continue
			}
			at, id, perr := apiv1.ParseAuditCursor(b)
			if perr != nil {
				writeError(w, http.StatusBadRequest, k+": "+perr.Error())
				return
			}
			if k == "before" {
				aq.Before = &store.AuditCursor{At: at, ID: id}
			} else {
				aq.After = &store.AuditCursor{At: at, ID: id}
			}
		}
		evs, err = a.cfg.Store.QueryAudit(r.Context(), aq)
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
	case req.Name == admin.ServerTokenName:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("name: %q names the server's own admin token in audit events; choose another", admin.ServerTokenName))
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
		Actor: actor(r), Details: map[string]string{"name": req.Name, "role": req.Role}}
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
		Actor: actor(r), Details: map[string]string{"name": name}}
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
