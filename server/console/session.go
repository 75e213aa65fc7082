package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/vigo-enroll/vigo/server/admin"
)

// Cookie names. The __Host- prefix makes the browser refuse the cookie
// unless it is Secure, has Path=/ and no Domain: no other host, and no
// plain-HTTP page, can set or shadow it.
const (
	sessionCookie = "__Host-vigo-session"
	// signInCookie carries the sign-in form's CSRF token before there is
	// a session (double submit): a page elsewhere cannot sign a browser in
	// with the attacker's credential.
	signInCookie = "__Host-vigo-sign-in"
)

// maxSessions bounds the sessions kept; signing in beyond it ends the
// oldest.
const maxSessions = 10_000

// session is a signed-in operator.
type session struct {
	caller admin.Caller
	// csrf is the token every form of the session posts back.
	csrf     string
	created  time.Time
	lastUsed time.Time
}

// sessions are the live sessions, by the SHA-256 of their cookie value (a
// session id is a bearer secret: it is not kept as such).
type sessions struct {
	idle, max time.Duration
	mu        sync.Mutex
	m         map[[32]byte]*session
}

func newSessions(idle, max time.Duration) *sessions {
	return &sessions{idle: idle, max: max, m: map[[32]byte]*session{}}
}

// randomToken is 256 random bits, URL-safe.
func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// create starts a session for c and returns its cookie value.
func (ss *sessions) create(c admin.Caller, now time.Time) (string, *session) {
	id := randomToken()
	s := &session{caller: c, csrf: randomToken(), created: now, lastUsed: now}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= maxSessions {
		var oldest [32]byte
		var at time.Time
		for k, v := range ss.m {
			if ss.expired(v, now) {
				delete(ss.m, k)
				continue
			}
			if at.IsZero() || v.created.Before(at) {
				oldest, at = k, v.created
			}
		}
		if len(ss.m) >= maxSessions {
			delete(ss.m, oldest)
		}
	}
	ss.m[sha256.Sum256([]byte(id))] = s
	return id, s
}

func (ss *sessions) expired(s *session, now time.Time) bool {
	return now.Sub(s.lastUsed) >= ss.idle || now.Sub(s.created) >= ss.max
}

// get returns the live session of a cookie value, or nil; an expired one
// is ended. touch marks it used (a live refresh does not: a tab left open
// must still time out).
func (ss *sessions) get(id string, now time.Time, touch bool) *session {
	if id == "" {
		return nil
	}
	k := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[k]
	if s == nil {
		return nil
	}
	if ss.expired(s, now) {
		delete(ss.m, k)
		return nil
	}
	if touch {
		s.lastUsed = now
	}
	copied := *s
	return &copied
}

// end ends the session of a cookie value.
func (ss *sessions) end(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, sha256.Sum256([]byte(id)))
}

// setCookie sets a console cookie: HttpOnly (no script reads it), Secure
// (HTTPS only), SameSite=Strict (no cross-site request carries it, not
// even a top-level navigation), Path=/ (as __Host- requires). maxAge < 0
// deletes it; 0 makes it last as long as the browser session.
func setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
}

func cookieValue(r *http.Request, name string) string {
	if ck, err := r.Cookie(name); err == nil {
		return ck.Value
	}
	return ""
}

// liveHeader marks the requests of the live-refresh script.
const liveHeader = "X-Vigo-Live"

// handler is a console handler that runs in a session.
type handler func(w http.ResponseWriter, r *http.Request, s *session)

// authorized runs h in the request's session when its caller is allowed
// need (admin.Caller.Allows, the admin API's check). Without a session it
// sends a page request to the sign-in page (coming back afterwards), and
// refuses anything else with 401; a caller not allowed gets 403.
func (c *Console) authorized(need admin.Access, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		s := c.sessions.get(cookieValue(r, sessionCookie), c.cfg.Now(), r.Header.Get(liveHeader) == "")
		if s == nil {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, "/ui/sign-in?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, r, nil, http.StatusUnauthorized, "You are signed out (or your session expired): sign in again.")
			return
		}
		if v, ok := c.cfg.Auth.(admin.Revocable); ok {
			valid, err := v.StillValid(r.Context(), s.caller)
			if err != nil {
				c.internal(w, r, nil, "check the session's credential", err)
				return
			}
			if !valid {
				// Its admin token was revoked: the session ends with it.
				c.sessions.end(cookieValue(r, sessionCookie))
				setCookie(w, sessionCookie, "", -1)
				if r.Method == http.MethodGet || r.Method == http.MethodHead {
					http.Redirect(w, r, "/ui/sign-in?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
					return
				}
				c.fail(w, r, nil, http.StatusUnauthorized, "The admin token you signed in with was revoked: sign in again.")
				return
			}
		}
		if !s.caller.Allows(need) {
			c.fail(w, r, s, http.StatusForbidden, "Your credential ("+s.caller.Name+") has the role "+s.caller.Role+", which may not do this.")
			return
		}
		h(w, r.WithContext(admin.WithCaller(r.Context(), s.caller)), s)
	})
}

// csrfChecked refuses a form posted without the session's CSRF token, or
// from another site.
func (c *Console) csrfChecked(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		if !sameOrigin(r) {
			c.fail(w, r, s, http.StatusForbidden, "This form was posted from another site: refused.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		got := r.PostFormValue("csrf")
		// Constant time: the token is a secret of the session.
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
			c.fail(w, r, s, http.StatusForbidden, "This form is missing its security token (or it is stale): reload the page and try again.")
			return
		}
		h(w, r, s)
	}
}

// maxForm bounds a posted form.
const maxForm = 16 << 10

// sameOrigin reports whether a request may come from a console page:
// browsers say where a request comes from in Sec-Fetch-Site (and Origin);
// a request that says nothing (an old browser, a script) is left to the
// CSRF token.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return false
		}
	}
	return true
}

// safeNext is where to go after signing in: a console path only (an
// address elsewhere would make the sign-in page an open redirect).
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") ||
		strings.HasPrefix(next, "/ui/sign-") {
		return "/ui/"
	}
	return next
}
