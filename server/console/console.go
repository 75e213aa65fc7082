// Package console is the server's web console, served under /ui/ on the
// HTTPS listener: the fleet, the policy and the audit trail at a glance,
// and the few actions an on-call operator needs (revoke an envoy, ask it to
// rebootstrap or update, issue and revoke enrollment tokens).
//
// It is server-rendered with html/template from embedded files: no build
// step, no CDN, readable without JavaScript; one small script (served as a
// file) refreshes live parts of pages. It calls the same use cases as the
// admin API (server/admin, the store, the policy controller), never the
// other way round.
//
// Security: an operator signs in with an admin credential (checked by the
// same admin.Authenticator as the admin API) and gets a server-side
// session; its cookie is HttpOnly, Secure, SameSite=Strict and __Host-
// prefixed, and the session ends after an idle time, after an absolute
// time and at sign-out. Every state-changing form carries the session's
// CSRF token (the sign-in form a pre-session one) and a POST without it is
// refused. Every request goes through admin.Caller.Allows, the admin API's
// check: a read-only session sees no action buttons, and the server refuses
// its actions anyway. Pages are sent with a strict Content-Security-Policy
// (scripts and styles from this origin only, nothing inline) and
// X-Frame-Options: DENY. Sign-in attempts are rate-limited per source
// address and audited.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/ratelimit"
	"github.com/vigo-enroll/vigo/server/store"
)

//go:embed templates static
var files embed.FS

// PolicyController is what the console needs of the policy controller.
type PolicyController interface {
	// Status returns the policy status of this replica.
	Status() apiv1.PolicyStatus
	// History lists the applied revisions, newest first.
	History(ctx context.Context, limit int) ([]apiv1.PolicyHistoryEntry, error)
}

// Config configures the console. Store, Ops and Auth are required.
type Config struct {
	Store store.Store
	Ops   *admin.Ops
	// Auth checks the credential given at sign-in: the admin API's.
	Auth admin.Authenticator
	// Policy returns the active policy (nil when none is valid yet).
	Policy func() *policy.Policy
	// PolicyCtl reports the policy source's status; nil when no policy
	// source is configured.
	PolicyCtl PolicyController
	// CheckinInterval is the agents' check-in interval: an active envoy
	// not seen for StaleIntervals of them is stale. Zero means a minute.
	CheckinInterval time.Duration
	// SourceIP is the client address of a request (the admin API's view,
	// which honours only trusted proxies); nil means the TCP peer.
	SourceIP func(*http.Request) netip.Addr
	// Replica names this server in audit events.
	Replica string
	// IdleTimeout ends a session not used for that long (zero: 30
	// minutes); MaxSessionAge ends any session that old (zero: 12 hours).
	IdleTimeout, MaxSessionAge time.Duration
	// SignIns limits sign-in attempts per source address (the zero Limit
	// means 5 a minute, in bursts of 5).
	SignIns ratelimit.Limit
	// Logger: nil discards logs.
	Logger *slog.Logger
	// Now: nil means time.Now.
	Now func() time.Time
}

// StaleIntervals is how many check-in intervals an active envoy may miss
// before it is stale.
const StaleIntervals = 3

// Console is the web console's HTTP handler.
type Console struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	signIns  *ratelimit.Keyed[netip.Addr]
	pages    map[string]*template.Template
	static   http.Handler
	mux      *http.ServeMux
}

// New returns the console.
func New(cfg Config) (*Console, error) {
	if cfg.Store == nil || cfg.Ops == nil || cfg.Auth == nil {
		return nil, errors.New("console: Store, Ops and Auth are required")
	}
	if cfg.Policy == nil {
		cfg.Policy = func() *policy.Policy { return nil }
	}
	if cfg.CheckinInterval <= 0 {
		cfg.CheckinInterval = time.Minute
	}
	if cfg.SourceIP == nil {
		cfg.SourceIP = peerAddr
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.MaxSessionAge <= 0 {
		cfg.MaxSessionAge = 12 * time.Hour
	}
	if cfg.SignIns == (ratelimit.Limit{}) {
		cfg.SignIns = ratelimit.Limit{PerSecond: 5.0 / 60, Burst: 5}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Console{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "console"),
		sessions: newSessions(cfg.IdleTimeout, cfg.MaxSessionAge),
		signIns:  ratelimit.NewKeyed[netip.Addr](cfg.SignIns, cfg.Now),
		pages:    map[string]*template.Template{},
	}
	for _, name := range []string{"signin", "overview", "envoys", "envoy", "policy", "tokens", "audit", "error"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/partials.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: parse template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	static, err := fs.Sub(files, "static")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	c.static = http.StripPrefix("/ui/static/", http.FileServerFS(static))
	c.mux = c.routes()
	return c, nil
}

// routes is the console's route table, under /ui/. Every page but the
// sign-in page and the static files needs a session; every route that
// changes something needs admin.Change.
func (c *Console) routes() *http.ServeMux {
	m := http.NewServeMux()
	read := func(pattern string, h handler) { m.Handle(pattern, c.authorized(admin.Read, h)) }
	change := func(pattern string, h handler) { m.Handle(pattern, c.authorized(admin.Change, c.csrfChecked(h))) }

	m.Handle("GET /ui/static/", http.HandlerFunc(c.handleStatic))
	m.HandleFunc("GET /ui/sign-in", c.handleSignInPage)
	m.HandleFunc("POST /ui/sign-in", c.handleSignIn)

	read("GET /ui/{$}", c.handleOverview)
	read("GET /ui/envoys", c.handleEnvoys)
	read("GET /ui/envoys/{id}", c.handleEnvoy)
	change("POST /ui/envoys/{id}/revoke", c.handleEnvoyRevoke)
	change("POST /ui/envoys/{id}/rebootstrap", c.handleEnvoyRebootstrap)
	change("POST /ui/envoys/{id}/update", c.handleEnvoyUpdate)
	read("GET /ui/policy", c.handlePolicy)
	read("GET /ui/tokens", c.handleTokens)
	change("POST /ui/tokens", c.handleTokenCreate)
	change("POST /ui/tokens/{id}/revoke", c.handleTokenRevoke)
	read("GET /ui/audit", c.handleAudit)
	// Signing out needs only a session (and its CSRF token): a read-only
	// session may end itself.
	m.Handle("POST /ui/sign-out", c.authorized(admin.Read, c.csrfChecked(c.handleSignOut)))
	// Anything else: the sign-in page when signed out, else not found.
	read("/ui/", func(w http.ResponseWriter, r *http.Request, s *session) {
		c.fail(w, r, s, http.StatusNotFound, "There is no page at "+clip(r.URL.Path, 100)+".")
	})
	return m
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Scripts, styles and images from this origin only; nothing inline,
	// no plugins, no framing, forms post only here.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	// Framing is refused (clickjacking) by the CSP above and, for older
	// browsers, by X-Frame-Options.
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) handleStatic(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	c.static.ServeHTTP(w, r)
}

// peerAddr is the TCP peer of r.
func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// clip bounds client input repeated in a page.
func clip(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}
