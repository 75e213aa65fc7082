package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/token"
)

// access is what a route asks of its caller.
type access int

const (
	accessOpen   access = iota // anyone, rate-limited: the bootstrap routes
	accessPublic               // anyone: health, readiness, unknown paths
	accessHook                 // the policy webhook's HMAC
	accessRead                 // an admin token of any role
	accessAdmin                // an admin token with the role admin
)

func (x access) String() string {
	return [...]string{"open", "public", "webhook HMAC", store.RoleReadOnly + " or " + store.RoleAdmin, store.RoleAdmin}[x]
}

// route is an entry of the route table, for the tests that check every
// route against every role.
type route struct {
	pattern string
	access  access
}

// caller is who sent an authenticated admin request.
type caller struct {
	// name is the admin token's name ("admin" for the server's own admin
	// token): the actor of the audit events the request writes.
	name string
	role string
}

// ServerTokenName is the name of the server's own admin token (the one
// written at first start) in audit events; named tokens cannot take it.
const ServerTokenName = "admin"

type callerKey struct{}

// callerOf returns the caller that authorize let through.
func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

// authorize is the one authorization check of the admin API: every admin
// route goes through it. It authenticates the bearer token (the server's
// own admin token, or a named admin token from the store) and lets the
// request through when the token's role may use a route that needs need:
// any role for accessRead, the role admin for accessAdmin.
func (a *API) authorize(need access, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := a.authenticate(w, r)
		if !ok {
			return
		}
		if need == accessAdmin && c.role != store.RoleAdmin {
			writeError(w, http.StatusForbidden, fmt.Sprintf("admin token %q has the role %s: %s %s needs the role %s",
				c.name, c.role, r.Method, r.URL.Path, store.RoleAdmin))
			return
		}
		// Administrators learn the server's build with every answer, so
		// that vigocli can warn when it is another build (and judges
		// policy with other code); the open routes do not say it.
		w.Header().Set(apiv1.HeaderServerVersion, a.cfg.Build.Version)
		if a.cfg.Build.Commit != "" {
			w.Header().Set(apiv1.HeaderServerCommit, a.cfg.Build.Commit)
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	}
}

// authenticate finds who sent r, or answers 401 (500 when the store
// fails) and returns false. Refusals do not say whether a named token
// exists, was revoked or has another secret.
func (a *API) authenticate(w http.ResponseWriter, r *http.Request) (caller, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tok = strings.TrimSpace(tok)
	if !ok || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="vigo"`)
		writeError(w, http.StatusUnauthorized, "admin credential required: send Authorization: Bearer <admin token> (vigocli reads vigo-data/admin.token)")
		return caller{}, false
	}
	invalid := func() (caller, bool) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="vigo", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "admin credential is not valid")
		return caller{}, false
	}
	if t, named := token.ParseAdmin(tok); named {
		// Looked up by its id (not secret); one constant-time compare.
		st, err := a.cfg.Store.GetAdminToken(r.Context(), t.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return invalid()
		case err != nil:
			a.internal(w, "look up admin token", err)
			return caller{}, false
		case !token.AdminCompare(st.SecretHash, t) || !st.RevokedAt.IsZero():
			return invalid()
		}
		return caller{name: st.Name, role: st.Role}, true
	}
	sum := sha256.Sum256([]byte(tok))
	// Compare hashes in constant time: timing reveals nothing of the token.
	if subtle.ConstantTimeCompare(sum[:], a.cfg.AdminTokenHash[:]) != 1 {
		return invalid()
	}
	return caller{name: ServerTokenName, role: store.RoleAdmin}, true
}
