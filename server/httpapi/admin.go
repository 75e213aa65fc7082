package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/store"
)

// DefaultTokenTTL is the lifetime of a token when none is asked for.
const DefaultTokenTTL = admin.DefaultTokenTTL

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
		ReplacedBy: e.ReplacedBy, Rebootstrap: e.Rebootstrap, UpdateVersion: e.UpdateVersion,
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
	a.respondEnvoy(w, "request update")(a.cfg.Ops.RequestUpdate(r.Context(), admin.CallerFrom(r.Context()), r.PathValue("id"), req.Version))
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
	evs, err := a.cfg.Store.ListAudit(r.Context(), since, limit)
	if err != nil {
		a.internal(w, "list audit", err)
		return
	}
	out := make([]apiv1.AuditEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, apiv1.AuditEvent{ID: e.ID, At: e.At, Type: e.Type, Result: e.Result, Hostname: e.Hostname,
			SourceIP: e.SourceIP, Method: e.Method, Rule: e.Rule, Revision: e.Revision, TokenID: e.TokenID,
			EnvoyUUID: e.EnvoyUUID, Reason: e.Reason, Replica: e.Replica, Details: e.Details})
	}
	writeJSON(w, http.StatusOK, out)
}

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

func (a *API) internal(w http.ResponseWriter, op string, err error) {
	a.log.Error(op, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error: see the server log")
}
