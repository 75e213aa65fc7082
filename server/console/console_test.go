package console_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/bootstrap"
	"github.com/vigo-enroll/vigo/server/console"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
	"github.com/vigo-enroll/vigo/server/store/storetest"
	"github.com/vigo-enroll/vigo/server/token"
)

// These tests drive the console's handler over real HTTPS with a real
// SQLite store and a client that keeps cookies like a browser; the
// browser tests (flows_test.go) run the whole server in Chromium.

// fakeAuth stands in for named admin tokens with roles (issue 13, not
// landed yet): credential -> caller. The server's own token is
// admin.ServerToken, tested in server/admin.
type fakeAuth map[string]admin.Caller

func (f fakeAuth) Authenticate(_ context.Context, credential string) (admin.Caller, error) {
	if c, ok := f[credential]; ok {
		return c, nil
	}
	return admin.Caller{}, admin.ErrInvalidCredential
}

const (
	adminSecret = "va_admin-secret"
	roSecret    = "va_read-only-secret"
)

var testCallers = fakeAuth{
	adminSecret: {Name: "alice", Role: admin.RoleAdmin},
	roSecret:    {Name: "ci", Role: admin.RoleReadOnly},
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	t     *testing.T
	url   string
	store store.Store
	clock *storetest.Clock
	srv   *httptest.Server
}

// newFixture serves a console (edit may change its configuration) on a
// loopback HTTPS server.
func newFixture(t *testing.T, edit func(*console.Config)) *fixture {
	t.Helper()
	st, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "vigo.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := storetest.NewClock(t0)
	ops, err := admin.New(admin.Config{Store: st, Replica: "r1", Now: clk.Now, OneLiner: func(token string) (string, error) {
		return bootstrap.OneLiner(bootstrap.OneLinerParams{ServerURL: "https://vigo.test:8443", Token: token})
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := console.Config{Store: st, Ops: ops, Auth: testCallers, Replica: "r1",
		CheckinInterval: time.Minute, Now: clk.Now}
	if edit != nil {
		edit(&cfg)
	}
	c, err := console.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(c)
	t.Cleanup(srv.Close)
	return &fixture{t: t, url: srv.URL, store: st, clock: clk, srv: srv}
}

// client is a browser-like client: it keeps cookies and does not follow
// redirects (the tests look at them).
type client struct {
	t   *testing.T
	f   *fixture
	hc  *http.Client
	jar *cookiejar.Jar
}

func (f *fixture) client() *client {
	jar, _ := cookiejar.New(nil)
	// A client of its own (srv.Client() is one shared client), trusting
	// the server's certificate.
	hc := &http.Client{
		Transport: f.srv.Client().Transport, Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &client{t: f.t, f: f, hc: hc, jar: jar}
}

func (c *client) do(req *http.Request) (*http.Response, string) {
	c.t.Helper()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (c *client) get(path string) (*http.Response, string) {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.f.url+path, nil)
	return c.do(req)
}

func (c *client) post(path string, form url.Values, header ...string) (*http.Response, string) {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, c.f.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return c.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfOf is the CSRF token in a page's forms.
func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return m[1]
}

// signIn signs in with a credential and returns the session's CSRF token.
func (c *client) signIn(credential string) string {
	c.t.Helper()
	_, page := c.get("/ui/sign-in")
	resp, body := c.post("/ui/sign-in", url.Values{"csrf": {csrfOf(c.t, page)}, "credential": {credential}, "next": {"/ui/"}})
	if resp.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("sign in: HTTP %d\n%s", resp.StatusCode, body)
	}
	_, page = c.get("/ui/")
	return csrfOf(c.t, page)
}

// enroll adds an active envoy to the store.
func enroll(t *testing.T, st store.Store, i int, hostname string, at time.Time) store.Envoy {
	t.Helper()
	e := store.Envoy{
		UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Hostname: hostname, PublicKey: []byte(fmt.Sprintf("%032d", i)),
		CertSerial: fmt.Sprintf("%x", 1000+i), CertNotAfter: at.Add(365 * 24 * time.Hour), OS: "linux", Arch: "amd64",
		SourceIP: "192.0.2.10", Method: []string{"approved", "trusted", "token"}[i%3], Rule: fmt.Sprintf("rule%d", i%4),
		PolicyRevision: "rev1", CreatedAt: at,
	}
	_, err := st.Enroll(t.Context(), store.EnrollParams{Envoy: e, Now: at, Audit: store.AuditEvent{
		At: at, Type: store.AuditRegistration, Result: "allowed", Hostname: hostname, Method: e.Method, Rule: e.Rule, EnvoyUUID: e.UUID}})
	if err != nil {
		t.Fatal(err)
	}
	e.Status = store.StatusActive
	return e
}

func TestSignedOutEveryPageRedirectsToSignIn(t *testing.T) {
	f := newFixture(t, nil)
	e := enroll(t, f.store, 1, "web1.example.com", t0)
	c := f.client()
	for _, path := range []string{"/ui/", "/ui/envoys", "/ui/envoys?status=active", "/ui/envoys/" + e.UUID, "/ui/policy",
		"/ui/tokens", "/ui/audit", "/ui/no-such-page"} {
		t.Run(path, func(t *testing.T) {
			resp, _ := c.get(path)
			want := "/ui/sign-in?next=" + url.QueryEscape(path)
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
				t.Errorf("GET %s: HTTP %d to %q, want 303 to %q", path, resp.StatusCode, resp.Header.Get("Location"), want)
			}
		})
	}
	for _, path := range []string{"/ui/envoys/" + e.UUID + "/revoke", "/ui/tokens", "/ui/sign-out"} {
		t.Run("POST "+path, func(t *testing.T) {
			resp, _ := c.post(path, url.Values{"reason": {"x"}})
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("POST %s signed out: HTTP %d, want 401", path, resp.StatusCode)
			}
		})
	}
	if got, _ := f.store.GetEnvoy(t.Context(), e.UUID); got.Status != store.StatusActive {
		t.Errorf("envoy status %s after signed-out posts, want active", got.Status)
	}
}

func TestSecurityHeadersAndCookie(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client()
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"X-Frame-Options":         "DENY",
		"X-Content-Type-Options":  "nosniff",
	}
	check := func(what string, resp *http.Response) {
		t.Helper()
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", what, k, got, v)
			}
		}
	}
	resp, page := c.get("/ui/sign-in")
	check("sign-in page", resp)
	if strings.Contains(page, "<script>") || strings.Contains(page, "style=") || strings.Contains(page, " on") && regexp.MustCompile(` on[a-z]+=`).MatchString(page) {
		t.Error("the sign-in page has inline script or style")
	}
	resp, _ = c.post("/ui/sign-in", url.Values{"csrf": {csrfOf(t, page)}, "credential": {adminSecret}})
	check("sign-in answer", resp)
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "__Host-vigo-session" {
			session = ck
		}
	}
	if session == nil {
		t.Fatalf("no session cookie; cookies %v", resp.Cookies())
	}
	if !session.HttpOnly || !session.Secure || session.SameSite != http.SameSiteStrictMode || session.Path != "/" || session.Domain != "" {
		t.Errorf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/, no Domain", session)
	}
	for _, path := range []string{"/ui/", "/ui/envoys", "/ui/policy", "/ui/tokens", "/ui/audit", "/ui/static/console.js", "/ui/static/console.css"} {
		resp, body := c.get(path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
		}
		check(path, resp)
		if strings.HasSuffix(path, ".js") || strings.HasSuffix(path, ".css") {
			continue
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: Cache-Control %q, want no-store", path, resp.Header.Get("Cache-Control"))
		}
		if strings.Contains(body, "<script>") || regexp.MustCompile(` (on[a-z]+|style)=`).MatchString(body) {
			t.Errorf("GET %s: inline script or style in the page", path)
		}
	}
}

func TestSessionExpires(t *testing.T) {
	tests := []struct {
		name string
		// steps of time, with a page load after each
		steps []time.Duration
		live  bool // the loads are live refreshes
		ok    bool // still signed in at the end
	}{
		{"used within the idle time", []time.Duration{20 * time.Minute, 20 * time.Minute, 20 * time.Minute}, false, true},
		{"idle too long", []time.Duration{31 * time.Minute}, false, false},
		{"live refreshes do not keep it alive", []time.Duration{20 * time.Minute, 20 * time.Minute}, true, false},
		{"absolute age", []time.Duration{25 * time.Minute, 25 * time.Minute, 25 * time.Minute, 25 * time.Minute, 25 * time.Minute, 25 * time.Minute}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *console.Config) { c.IdleTimeout, c.MaxSessionAge = 30*time.Minute, 2*time.Hour })
			c := f.client()
			c.signIn(adminSecret)
			var resp *http.Response
			for _, d := range tc.steps {
				f.clock.Advance(d)
				req, _ := http.NewRequest(http.MethodGet, f.url+"/ui/", nil)
				if tc.live {
					req.Header.Set("X-Vigo-Live", "1")
				}
				resp, _ = c.do(req)
			}
			if ok := resp.StatusCode == http.StatusOK; ok != tc.ok {
				t.Errorf("last load: HTTP %d (location %q), want signed in = %v", resp.StatusCode, resp.Header.Get("Location"), tc.ok)
			}
		})
	}
}

func TestSignOutEndsTheSession(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client()
	csrf := c.signIn(adminSecret)
	stolen := c.jar.Cookies(mustURL(t, f.url))
	resp, _ := c.post("/ui/sign-out", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/sign-in" {
		t.Fatalf("sign out: HTTP %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The old cookie, replayed, is worth nothing: the session is gone
	// from the server, not just from the browser.
	other := f.client()
	other.jar.SetCookies(mustURL(t, f.url), stolen)
	if resp, _ := other.get("/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the signed-out session's cookie still opens /ui/: HTTP %d", resp.StatusCode)
	}
	evs, err := f.store.QueryAudit(t.Context(), store.AuditQuery{Types: []string{store.AuditConsoleSignOut}})
	if err != nil || len(evs) != 1 || evs[0].Actor != "alice" {
		t.Errorf("sign-out audit = %+v, %v", evs, err)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestSignInAuditedAndRateLimited(t *testing.T) {
	f := newFixture(t, nil)
	try := func(credential string) *http.Response {
		t.Helper()
		c := f.client() // signed out each time, from the same address
		_, page := c.get("/ui/sign-in")
		resp, _ := c.post("/ui/sign-in", url.Values{"csrf": {csrfOf(t, page)}, "credential": {credential}})
		return resp
	}
	if resp := try("va_wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong credential: HTTP %d, want 401", resp.StatusCode)
	}
	if resp := try(adminSecret); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("right credential: HTTP %d, want 303", resp.StatusCode)
	}
	for range 3 {
		try("va_wrong")
	}
	// Five attempts a minute from one address: the sixth waits, even with
	// the right credential.
	resp := try(adminSecret)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("6th attempt: HTTP %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	f.clock.Advance(time.Minute)
	if resp := try(adminSecret); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after a minute: HTTP %d, want 303", resp.StatusCode)
	}
	evs, err := f.store.QueryAudit(t.Context(), store.AuditQuery{Types: []string{store.AuditConsoleSignIn}})
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	for _, ev := range evs {
		results = append(results, ev.Result)
		if ev.SourceIP != "127.0.0.1" {
			t.Errorf("sign-in event from %q, want 127.0.0.1", ev.SourceIP)
		}
		for _, v := range append([]string{ev.Reason}, mapValues(ev.Details)...) {
			if strings.Contains(v, "secret") {
				t.Errorf("a credential in the audit log: %+v", ev)
			}
		}
	}
	// Newest first; the refused (rate-limited) attempt is not an event.
	if got, want := strings.Join(results, ","), "ok,denied,denied,denied,ok,denied"; got != want {
		t.Errorf("sign-in events %s, want %s", got, want)
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// postedForm is a form and where it posts.
type postedForm struct {
	path string
	form url.Values
}

// changeForms are the console's forms that change something, filled in,
// for an envoy and an unused token.
func changeForms(envoyUUID, tokenID string) []postedForm {
	return []postedForm{
		{"/ui/envoys/" + envoyUUID + "/revoke", url.Values{"reason": {"stolen"}}},
		{"/ui/envoys/" + envoyUUID + "/rebootstrap", url.Values{}},
		{"/ui/envoys/" + envoyUUID + "/update", url.Values{"version": {"v2"}}},
		{"/ui/tokens", url.Values{"pattern": {"y.example.com"}}},
		{"/ui/tokens/" + tokenID + "/revoke", url.Values{}},
	}
}

// TestFormWithoutCSRFRefused: every form that changes something is
// refused without the session's CSRF token, with a wrong one, or posted
// from another site; the sign-in form without its pre-session token.
func TestFormWithoutCSRFRefused(t *testing.T) {
	f := newFixture(t, nil)
	e := enroll(t, f.store, 1, "web1.example.com", t0)
	tok, err := admin.New(admin.Config{Store: f.store})
	if err != nil {
		t.Fatal(err)
	}
	issued, err := tok.CreateToken(t.Context(), admin.Caller{Name: "setup"}, admin.TokenRequest{Pattern: "x.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	c := f.client()
	csrf := c.signIn(adminSecret)
	forms := append(changeForms(e.UUID, issued.Token.ID), postedForm{"/ui/sign-out", url.Values{}})
	for _, fm := range forms {
		for _, tc := range []struct {
			name   string
			csrf   string
			header []string
		}{
			{"no token", "", nil},
			{"wrong token", "x" + csrf[1:], nil},
			{"cross-site", csrf, []string{"Sec-Fetch-Site", "cross-site"}},
			{"other origin", csrf, []string{"Origin", "https://evil.example"}},
		} {
			t.Run(fm.path+" "+tc.name, func(t *testing.T) {
				form := url.Values{}
				for k, v := range fm.form {
					form[k] = v
				}
				if tc.csrf != "" {
					form.Set("csrf", tc.csrf)
				}
				resp, body := c.post(fm.path, form, tc.header...)
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("HTTP %d, want 403\n%s", resp.StatusCode, body)
				}
			})
		}
	}
	// Nothing changed, and the session still works.
	if got, _ := f.store.GetEnvoy(t.Context(), e.UUID); got.Status != store.StatusActive || got.Rebootstrap || got.UpdateVersion != "" {
		t.Errorf("envoy changed by refused forms: %+v", got)
	}
	if ts, _ := f.store.ListTokens(t.Context()); len(ts) != 1 || !ts[0].RevokedAt.IsZero() {
		t.Errorf("tokens changed by refused forms: %+v", ts)
	}
	if resp, _ := c.get("/ui/"); resp.StatusCode != http.StatusOK {
		t.Errorf("session ended by refused forms: HTTP %d", resp.StatusCode)
	}
	// With the token, the same form works.
	if resp, body := c.post("/ui/envoys/"+e.UUID+"/revoke", url.Values{"csrf": {csrf}, "reason": {"stolen"}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("revoke with the token: HTTP %d\n%s", resp.StatusCode, body)
	}
	// Sign-in: the form's token must match its cookie.
	other := f.client()
	other.get("/ui/sign-in")
	if resp, _ := other.post("/ui/sign-in", url.Values{"credential": {adminSecret}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without its token: HTTP %d, want 403", resp.StatusCode)
	}
	fresh := f.client() // no pre-session cookie at all (login CSRF from another site)
	if resp, _ := fresh.post("/ui/sign-in", url.Values{"csrf": {"forged"}, "credential": {adminSecret}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without the pre-session cookie: HTTP %d, want 403", resp.StatusCode)
	}
}

// TestReadOnlySessionChangesNothing: a read-only session reads every page,
// sees no action, and every action is refused with 403 even with a valid
// CSRF token, leaving the store as it was.
func TestReadOnlySessionChangesNothing(t *testing.T) {
	f := newFixture(t, nil)
	e := enroll(t, f.store, 1, "web1.example.com", t0)
	ops, _ := admin.New(admin.Config{Store: f.store})
	issued, err := ops.CreateToken(t.Context(), admin.Caller{Name: "setup"}, admin.TokenRequest{Pattern: "x.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	c := f.client()
	csrf := c.signIn(roSecret)
	for _, path := range []string{"/ui/", "/ui/envoys", "/ui/envoys/" + e.UUID, "/ui/policy", "/ui/tokens", "/ui/audit"} {
		resp, page := c.get(path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
		}
		if !strings.Contains(page, "Read-only session") {
			t.Errorf("GET %s: no read-only banner", path)
		}
		// The only form that posts is signing out.
		if n := strings.Count(page, `method="post"`); n != 1 || !strings.Contains(page, `action="/ui/sign-out"`) {
			t.Errorf("GET %s: %d forms post; want only the sign-out form", path, n)
		}
	}
	for _, fm := range changeForms(e.UUID, issued.Token.ID) {
		fm.form.Set("csrf", csrf)
		resp, body := c.post(fm.path, fm.form)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "read-only") {
			t.Errorf("POST %s read-only: HTTP %d, want 403 naming the role\n%s", fm.path, resp.StatusCode, body)
		}
	}
	if got, _ := f.store.GetEnvoy(t.Context(), e.UUID); got.Status != store.StatusActive || got.Rebootstrap || got.UpdateVersion != "" {
		t.Errorf("envoy changed by a read-only session: %+v", got)
	}
	if ts, _ := f.store.ListTokens(t.Context()); len(ts) != 1 || !ts[0].RevokedAt.IsZero() {
		t.Errorf("tokens changed by a read-only session: %+v", ts)
	}
	// It may sign itself out.
	if resp, _ := c.post("/ui/sign-out", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("read-only sign out: HTTP %d", resp.StatusCode)
	}
}

func TestSignInNextIsNoOpenRedirect(t *testing.T) {
	tests := []struct{ next, want string }{
		{"/ui/envoys?status=active", "/ui/envoys?status=active"},
		{"https://evil.example/", "/ui/"},
		{"//evil.example/ui/", "/ui/"},
		{"/ui/\\evil", "/ui/"},
		{"/ui/sign-out", "/ui/"},
		{"", "/ui/"},
	}
	for _, tc := range tests {
		t.Run(tc.next, func(t *testing.T) {
			f := newFixture(t, nil)
			c := f.client()
			_, page := c.get("/ui/sign-in?next=" + url.QueryEscape(tc.next))
			resp, _ := c.post("/ui/sign-in", url.Values{"csrf": {csrfOf(t, page)}, "credential": {adminSecret}, "next": {tc.next}})
			if got := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || got != tc.want {
				t.Errorf("HTTP %d to %q, want 303 to %q", resp.StatusCode, got, tc.want)
			}
		})
	}
}

// TestBadInputIs4xx: malformed queries and forms are answered with 4xx
// pages that say what is wrong, never 500.
func TestBadInputIs4xx(t *testing.T) {
	f := newFixture(t, nil)
	e := enroll(t, f.store, 1, "web1.example.com", t0)
	c := f.client()
	csrf := c.signIn(adminSecret)
	gets := []struct {
		path string
		code int
		want string
	}{
		{"/ui/envoys?status=lost", 400, "status: must be active or revoked"},
		{"/ui/envoys?sort=size", 400, "sort: must be hostname, created or seen"},
		{"/ui/envoys?stale=yes", 400, "stale: must be 1"},
		{"/ui/envoys?after=!!!", 400, "not a position of this list"},
		{"/ui/envoys?after=aGVsbG8", 400, "not a position of this list"},
		{"/ui/envoys?q=" + strings.Repeat("a", 300), 400, "q: at most 253 characters"},
		{"/ui/envoys/nope.example.com", 404, "no envoy with uuid or active hostname"},
		{"/ui/audit?since=yesterday", 400, "since: "},
		{"/ui/audit?type=nope", 400, "type: not a kind of audit event"},
		{"/ui/audit?before=x", 400, "before: not a position"},
		{"/ui/policy?hostname=a..b&ip=1.2.3.4", 200, "invalid hostname"},
		{"/ui/policy?hostname=a.example.com&ip=300.1.1.1", 400, "ip: not an IPv4 or IPv6 address"},
		{"/ui/nothing-here", 404, "There is no page at /ui/nothing-here"},
	}
	for _, tc := range gets {
		t.Run("GET "+tc.path[:min(len(tc.path), 60)], func(t *testing.T) {
			resp, body := c.get(tc.path)
			if resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("HTTP %d, want %d with %q\n%s", resp.StatusCode, tc.code, tc.want, body)
			}
		})
	}
	posts := []struct {
		path string
		form url.Values
		code int
		want string
	}{
		{"/ui/envoys/" + e.UUID + "/revoke", url.Values{"reason": {"  "}}, 400, "reason: required"},
		{"/ui/envoys/" + e.UUID + "/update", url.Values{"version": {"a b"}}, 400, "version: required"},
		{"/ui/envoys/nope.example.com/revoke", url.Values{"reason": {"x"}}, 404, "no envoy"},
		{"/ui/tokens", url.Values{"pattern": {"a[b"}}, 400, "pattern: "},
		{"/ui/tokens", url.Values{"pattern": {"a.example.com"}, "ttl": {"soon"}}, 400, "ttl: "},
		{"/ui/tokens/short/revoke", url.Values{}, 400, "is not a token id"},
	}
	for _, tc := range posts {
		t.Run("POST "+tc.path, func(t *testing.T) {
			tc.form.Set("csrf", csrf)
			resp, body := c.post(tc.path, tc.form)
			if resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("HTTP %d, want %d with %q\n%s", resp.StatusCode, tc.code, tc.want, body)
			}
		})
	}
	// A too-large form is refused, not read.
	resp, _ := c.post("/ui/tokens", url.Values{"csrf": {csrf}, "note": {strings.Repeat("x", 64<<10)}})
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Errorf("64 KiB form: HTTP %d, want 4xx", resp.StatusCode)
	}
}

func TestNewNeedsItsParts(t *testing.T) {
	if _, err := console.New(console.Config{}); err == nil || !errors.Is(err, err) {
		t.Error("New without Store, Ops and Auth: no error")
	}
}

// TestOverviewCounts: registrations of the last 24 hours by method, and
// refusals grouped by their cause whatever the host.
func TestOverviewCounts(t *testing.T) {
	f := newFixture(t, nil)
	enroll(t, f.store, 1, "a.example.com", t0.Add(-time.Hour))    // approved
	enroll(t, f.store, 2, "b.example.com", t0.Add(-time.Hour))    // token
	enroll(t, f.store, 4, "c.example.com", t0.Add(-48*time.Hour)) // trusted, too old to count
	var evs []store.AuditEvent
	for i, h := range []string{"x.example.com", "y.example.com", "z.example.com"} {
		evs = append(evs, store.AuditEvent{At: t0.Add(-time.Duration(i) * time.Minute), Type: store.AuditRegistration, Result: "denied",
			Hostname: h, SourceIP: "198.51.100.7", Reason: "no rule allows " + h + " from 198.51.100.7: not in approved"})
	}
	evs = append(evs, store.AuditEvent{At: t0, Type: store.AuditRegistration, Result: "denied", Hostname: "old.example.com",
		Reason: "hostname old.example.com is revoked by policy: disk stolen"})
	if err := f.store.AppendAudit(t.Context(), evs...); err != nil {
		t.Fatal(err)
	}
	c := f.client()
	c.signIn(adminSecret)
	_, body := c.get("/ui/")
	for _, want := range []string{
		"Enrolled: 2", `href="/ui/envoys?method=trusted">trusted</a></td><td class="n">1<`, `href="/ui/envoys?method=token">token</a></td><td class="n">1<`,
		"Refused: 4", "<td>no rule allows &lt;host&gt; from &lt;addr&gt;: not in approved</td><td class=\"n\">3</td>",
		"<td>hostname &lt;host&gt; is revoked by policy: disk stolen</td><td class=\"n\">1</td>",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %s", want)
		}
	}
}

// TestSignInRenewsTheSession: signing in always starts a new session and
// ends the one the browser carried, so a session id planted in a browser
// before its owner signs in is worth nothing after.
func TestSignInRenewsTheSession(t *testing.T) {
	f := newFixture(t, nil)
	attacker := f.client()
	attacker.signIn(roSecret)
	planted := attacker.jar.Cookies(mustURL(t, f.url))

	victim := f.client()
	_, page := victim.get("/ui/sign-in") // signed out: the form and its pre-session cookie
	victim.jar.SetCookies(mustURL(t, f.url), planted)
	resp, _ := victim.post("/ui/sign-in", url.Values{"csrf": {csrfOf(t, page)}, "credential": {adminSecret}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: HTTP %d", resp.StatusCode)
	}
	if resp, _ := attacker.get("/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the planted session still works after the victim signed in: HTTP %d", resp.StatusCode)
	}
	if _, body := victim.get("/ui/"); !strings.Contains(body, "alice") {
		t.Error("the victim is not signed in as themselves")
	}
}

// TestNamedAdminTokensInTheConsole signs in with real named admin tokens
// of the store (vigocli admin-tokens create): a read-only one gets a
// read-only session, and revoking a token ends the sessions made with it
// at their next request.
func TestNamedAdminTokensInTheConsole(t *testing.T) {
	var st store.Store
	f := newFixture(t, func(c *console.Config) {
		st = c.Store
		c.Auth = admin.Tokens{Server: admin.ServerToken{Hash: sha256.Sum256([]byte(adminSecret))}, Store: c.Store}
	})
	named := func(name, role string) string {
		tok := token.Generate()
		at := store.AdminToken{ID: tok.ID, Name: name, Role: role, SecretHash: token.AdminHash(tok), CreatedAt: t0}
		if err := st.CreateAdminToken(t.Context(), at, store.AuditEvent{At: t0, Type: store.AuditAdminTokenCreated, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
		return token.AdminString(tok)
	}
	ro, ops := named("ci", admin.RoleReadOnly), named("bob", admin.RoleAdmin)

	c := f.client()
	c.signIn(ro)
	if _, page := c.get("/ui/envoys"); !strings.Contains(page, "Read-only session") {
		t.Error("a read-only admin token did not get a read-only session")
	}

	c2 := f.client()
	c2.signIn(ops)
	if resp, _ := c2.get("/ui/tokens"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/tokens as bob: HTTP %d", resp.StatusCode)
	}
	if _, err := st.RevokeAdminToken(t.Context(), "bob", t0, store.AuditEvent{At: t0, Type: store.AuditAdminTokenRevoked, Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	resp, _ := c2.get("/ui/tokens")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/sign-in") {
		t.Errorf("after its token was revoked, the session still opens /ui/tokens: HTTP %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := c.get("/ui/"); resp.StatusCode != http.StatusOK {
		t.Errorf("another token's session ended too: HTTP %d", resp.StatusCode)
	}
	// The revoked token no longer signs in.
	_, page := f.client().get("/ui/sign-in")
	resp, _ = f.client().post("/ui/sign-in", url.Values{"csrf": {csrfOf(t, page)}, "credential": {ops}, "next": {"/ui/"}})
	if resp.StatusCode == http.StatusSeeOther {
		t.Error("a revoked admin token signed in")
	}
}
