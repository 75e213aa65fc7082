package console

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/store"
)

type signInData struct {
	Next  string
	Token string // the pre-session CSRF token
	Error string
}

func (c *Console) handleSignInPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	next := safeNext(r.URL.Query().Get("next"))
	if s := c.sessions.get(cookieValue(r, sessionCookie), c.cfg.Now(), false); s != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	c.renderSignIn(w, r, http.StatusOK, next, "")
}

// renderSignIn shows the sign-in form with a new pre-session CSRF token.
func (c *Console) renderSignIn(w http.ResponseWriter, r *http.Request, code int, next, msg string) {
	tok := randomToken()
	setCookie(w, signInCookie, tok, 0)
	c.render(w, r, code, "signin", nil, "Sign in", signInData{Next: next, Token: tok, Error: msg})
}

func (c *Console) handleSignIn(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	src := c.cfg.SourceIP(r)
	if ok, wait := c.signIns.Take(src); !ok {
		secs := int((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		c.log.Warn("console sign-in rate-limited", "source_ip", src.String())
		c.renderSignIn(w, r, http.StatusTooManyRequests, "/ui/", "Too many sign-in attempts from your address: wait "+strconv.Itoa(secs)+" s and try again.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	next := safeNext(r.PostFormValue("next"))
	want := cookieValue(r, signInCookie)
	got := r.PostFormValue("csrf")
	if !sameOrigin(r) || want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		c.renderSignIn(w, r, http.StatusForbidden, next, "This form is missing its security token (or it is stale): try again.")
		return
	}
	now := c.cfg.Now().UTC()
	ev := store.AuditEvent{At: now, Type: store.AuditConsoleSignIn, SourceIP: addrString(src), Replica: c.cfg.Replica}
	caller, err := c.cfg.Auth.Authenticate(r.Context(), r.PostFormValue("credential"))
	switch {
	case errors.Is(err, admin.ErrInvalidCredential):
		ev.Result, ev.Reason = "denied", "admin credential is not valid"
		c.audit(r, ev)
		c.log.Warn("console sign-in refused", "source_ip", ev.SourceIP)
		c.renderSignIn(w, r, http.StatusUnauthorized, next, "That admin credential is not valid.")
		return
	case err != nil:
		c.log.Error("authenticate admin credential", "err", err)
		c.renderSignIn(w, r, http.StatusInternalServerError, next, "Internal error: see the server log.")
		return
	}
	if !caller.Allows(admin.Read) {
		ev.Result, ev.Reason = "denied", "the credential's role may not use the console"
		c.audit(r, ev)
		c.renderSignIn(w, r, http.StatusForbidden, next, "That credential may not use the console.")
		return
	}
	// A new session id at every sign-in (and the one the browser had, if
	// any, ended): an id planted before sign-in is worth nothing after.
	c.sessions.end(cookieValue(r, sessionCookie))
	id, _ := c.sessions.create(caller, now)
	ev.Result, ev.Actor, ev.Details = "ok", caller.Name, map[string]string{"role": caller.Role}
	c.audit(r, ev)
	c.log.Info("console sign-in", "actor", caller.Name, "role", caller.Role, "source_ip", ev.SourceIP)
	setCookie(w, sessionCookie, id, 0)
	setCookie(w, signInCookie, "", -1)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) handleSignOut(w http.ResponseWriter, r *http.Request, s *session) {
	c.sessions.end(cookieValue(r, sessionCookie))
	setCookie(w, sessionCookie, "", -1)
	c.audit(r, store.AuditEvent{At: c.cfg.Now().UTC(), Type: store.AuditConsoleSignOut, Result: "ok",
		SourceIP: addrString(c.cfg.SourceIP(r)), Replica: c.cfg.Replica, Actor: s.caller.Name})
	http.Redirect(w, r, "/ui/sign-in", http.StatusSeeOther)
}

// audit appends an event; a failure is logged (the request goes on).
func (c *Console) audit(r *http.Request, ev store.AuditEvent) {
	if err := c.cfg.Store.AppendAudit(r.Context(), ev); err != nil {
		c.log.Error("write audit event", "type", ev.Type, "err", err)
	}
}

func addrString(a interface {
	IsValid() bool
	String() string
}) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
