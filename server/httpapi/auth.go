package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/admin"
)

// access is what a route asks of its caller.
type access int

const (
	accessOpen   access = iota // anyone, rate-limited: the bootstrap routes
	accessPublic               // anyone: health, readiness, unknown paths
	accessHook                 // the policy webhook's HMAC
	accessRead                 // an admin credential of any role (admin.Read)
	accessAdmin                // an admin credential with the role admin (admin.Change)
)

func (x access) String() string {
	return [...]string{"open", "public", "webhook HMAC", admin.RoleReadOnly + " or " + admin.RoleAdmin, admin.RoleAdmin}[x]
}

// route is an entry of the route table, for the tests that check every
// route against every role.
type route struct {
	pattern string
	access  access
}

// authorize is the admin API's authentication and its one authorization
// check: every admin route goes through it. The bearer credential must be
// valid (401 otherwise, saying nothing of why: unknown, revoked and wrong
// secret look alike) and its caller's role must allow what the route needs
// (admin.Caller.Allows, the check the console applies too; 403 otherwise).
// The caller travels in the request's context (admin.CallerFrom): it is
// the actor of the audit events the request writes.
func (a *API) authorize(need access, h http.HandlerFunc) http.HandlerFunc {
	want := admin.Read
	if need == accessAdmin {
		want = admin.Change
	}
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(tok) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vigo"`)
			writeError(w, http.StatusUnauthorized, "admin credential required: send Authorization: Bearer <admin token> (vigocli reads vigo-data/admin.token)")
			return
		}
		c, err := a.cfg.Auth.Authenticate(r.Context(), tok)
		switch {
		case errors.Is(err, admin.ErrInvalidCredential):
			w.Header().Set("WWW-Authenticate", `Bearer realm="vigo", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "admin credential is not valid")
			return
		case err != nil:
			a.internal(w, "authenticate admin credential", err)
			return
		}
		if !c.Allows(want) {
			path := r.URL.Path
			if len(path) > 100 {
				path = strings.ToValidUTF8(path[:100], "") + "…"
			}
			writeError(w, http.StatusForbidden, fmt.Sprintf("admin token %q has the role %s: %s %s needs the role %s",
				c.Name, c.Role, method(r), path, admin.RoleAdmin))
			return
		}
		// Administrators learn the server's build with every answer, so
		// that vigocli can warn when it is another build (and judges
		// policy with other code); the open routes do not say it.
		w.Header().Set(apiv1.HeaderServerVersion, a.cfg.Build.Version)
		if a.cfg.Build.Commit != "" {
			w.Header().Set(apiv1.HeaderServerCommit, a.cfg.Build.Commit)
		}
		h(w, r.WithContext(admin.WithCaller(r.Context(), c)))
	}
}

// actor names who made an admin request, for the audit log.
func actor(r *http.Request) string { return admin.CallerFrom(r.Context()).Name }
