package httpapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/policy/sandbox"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/enroll"
	"github.com/vigo-enroll/vigo/server/policyctl"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
	"github.com/vigo-enroll/vigo/server/token"
)

// TestMain lets the test binary evaluate policy in its child process (the
// policy controller of the API under test).
func TestMain(m *testing.M) {
	sandbox.RunIfChild()
	os.Exit(m.Run())
}

const (
	serverAdminToken = "va_theserversownadmintokenwrittenatfirststartxxxxxxxx"
	hookSecret       = "0123456789abcdef-webhook"
)

// apiEnv is an API over real parts: SQLite, a CA, the enroller, a policy
// controller over a policy folder; served on loopback.
type apiEnv struct {
	api   *API
	srv   *httptest.Server
	store store.Store
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlitestore.Open(t.Context(), filepath.Join(dir, "vigo.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := ca.LoadOrCreate(ca.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	polDir := filepath.Join(dir, "policy")
	if err := os.MkdirAll(polDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(polDir, "p.cue"), []byte("package policy\napproved: [\"*.approved.test\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := gitsync.NewDir(gitsync.DirConfig{Path: polDir})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := policyctl.New(policyctl.Config{Source: src, Store: st, Replica: "test"})
	if err != nil {
		t.Fatal(err)
	}
	enr, err := enroll.New(enroll.Config{Store: st, CA: c, Policy: ctl.Active})
	if err != nil {
		t.Fatal(err)
	}
	ops, err := admin.New(admin.Config{Store: st, Policy: ctl.Active, Replica: "test"})
	if err != nil {
		t.Fatal(err)
	}
	api, err := New(Config{Enroller: enr, Store: st, Policy: ctl.Active, PolicyCtl: ctl, Ops: ops,
		Auth:          admin.Tokens{Server: admin.ServerToken{Hash: sha256.Sum256([]byte(serverAdminToken))}, Store: st},
		WebhookSecret: []byte(hookSecret), Replica: "test"})
	if err != nil {
		t.Fatal(err)
	}
	e := &apiEnv{api: api, srv: httptest.NewServer(api), store: st}
	t.Cleanup(e.srv.Close)
	return e
}

// namedToken creates a named admin token in the store and returns it.
func (e *apiEnv) namedToken(t *testing.T, name, role string, revoked bool) string {
	t.Helper()
	tok := token.Generate()
	at := store.AdminToken{ID: tok.ID, Name: name, Role: role, SecretHash: token.AdminHash(tok)}
	if err := e.store.CreateAdminToken(t.Context(), at, store.AuditEvent{Type: store.AuditAdminTokenCreated}); err != nil {
		t.Fatal(err)
	}
	if revoked {
		if _, err := e.store.RevokeAdminToken(t.Context(), name, at.CreatedAt, store.AuditEvent{Type: store.AuditAdminTokenRevoked}); err != nil {
			t.Fatal(err)
		}
	}
	return token.AdminString(tok)
}

func (e *apiEnv) do(t *testing.T, method, path, bearer, body string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// TestRouteRoles is the role table: every route of the route table, asked
// by every kind of caller, gets what its access level says. Admin routes
// refuse a read-only token with 403; every admin route refuses a missing,
// wrong or revoked token with 401; open and public routes never ask for a
// credential; the webhook wants its HMAC whatever bearer is sent. A route
// added without a row here fails the test.
func TestRouteRoles(t *testing.T) {
	e := newAPIEnv(t)
	readOnly := e.namedToken(t, "ci", store.RoleReadOnly, false)
	namedAdmin := e.namedToken(t, "alice", store.RoleAdmin, false)
	revoked := e.namedToken(t, "old-ci", store.RoleAdmin, true)
	wrongSecret := readOnly[:len(readOnly)-4] + "aaaa"
	if wrongSecret == readOnly {
		wrongSecret = readOnly[:len(readOnly)-4] + "bbbb"
	}

	// The expected access of every route: the test's own copy of the
	// route table's intent.
	want := map[string]access{
		"GET /bootstrap":                         accessOpen,
		"POST /api/v1/bootstrap/register":        accessOpen,
		"GET /api/v1/agent/latest":               accessOpen,
		"GET /api/v1/agent/download/{os}/{arch}": accessOpen,
		"GET /api/v1/agent/self":                 accessOpen,
		"GET /api/v1/agent/signing-key":          accessOpen,
		"POST /api/v1/policy/webhook":            accessHook,
		"GET /healthz":                           accessPublic,
		"GET /readyz":                            accessPublic,
		"GET /metrics":                           accessRead,
		"POST /api/v1/tokens":                    accessAdmin,
		"GET /api/v1/tokens":                     accessRead,
		"DELETE /api/v1/tokens/{id}":             accessAdmin,
		"GET /api/v1/envoys":                     accessRead,
		"GET /api/v1/envoys/{id}":                accessRead,
		"POST /api/v1/envoys/{id}/revoke":        accessAdmin,
		"POST /api/v1/envoys/{id}/rebootstrap":   accessAdmin,
		"POST /api/v1/envoys/{id}/update":        accessAdmin,
		"GET /api/v1/audit":                      accessRead,
		"GET /api/v1/policy/status":              accessRead,
		"POST /api/v1/policy/sync":               accessAdmin,
		"POST /api/v1/policy/suspend":            accessAdmin,
		"POST /api/v1/policy/resume":             accessAdmin,
		"POST /api/v1/policy/pin":                accessAdmin,
		"POST /api/v1/policy/unpin":              accessAdmin,
		"GET /api/v1/policy/history":             accessRead,
		"POST /api/v1/policy/explain":            accessRead,
		"GET /api/v1/version":                    accessRead,
		"POST /api/v1/admin-tokens":              accessAdmin,
		"GET /api/v1/admin-tokens":               accessAdmin,
		"DELETE /api/v1/admin-tokens/{name}":     accessAdmin,
		"/api/":                                  accessRead,
		"/":                                      accessPublic,
	}
	seen := map[string]bool{}
	for _, r := range e.api.table {
		seen[r.pattern] = true
		w, ok := want[r.pattern]
		switch {
		case !ok:
			t.Errorf("route %q (access %s) has no row in this test: add one", r.pattern, r.access)
		case w != r.access:
			t.Errorf("route %q has access %s, want %s", r.pattern, r.access, w)
		}
	}
	for p := range want {
		if !seen[p] {
			t.Errorf("route %q is in this test but not in the route table", p)
		}
	}

	callers := []struct {
		name   string
		bearer string
		role   string // "" = not authenticated
	}{
		{"no credential", "", ""},
		{"a wrong token", "va_nonsense", ""},
		{"a named token with a wrong secret", wrongSecret, ""},
		{"a revoked named token", revoked, ""},
		{"read-only", readOnly, store.RoleReadOnly},
		{"named admin", namedAdmin, store.RoleAdmin},
		{"the server's admin token", serverAdminToken, store.RoleAdmin},
	}
	for _, r := range e.api.table {
		method, path, ok := strings.Cut(r.pattern, " ")
		if !ok {
			method, path = "GET", r.pattern
		}
		path = strings.NewReplacer("{id}", "nosuch", "{os}", "linux", "{arch}", "amd64", "{name}", "nosuch").Replace(path)
		switch path {
		case "/api/":
			path = "/api/v1/nosuch"
		case "/":
			path = "/nosuch"
		}
		body := ""
		if method == "POST" {
			body = "{}"
		}
		for _, c := range callers {
			t.Run(r.pattern+"/"+c.name, func(t *testing.T) {
				code, resp := e.do(t, method, path, c.bearer, body)
				bad := ""
				switch r.access {
				case accessOpen, accessPublic:
					if code == http.StatusUnauthorized || code == http.StatusForbidden {
						bad = "an open route asked for a credential"
					}
				case accessHook:
					if code != http.StatusUnauthorized {
						bad = "the webhook without its HMAC must answer 401, whatever bearer is sent"
					}
				case accessRead, accessAdmin:
					switch {
					case c.role == "" && code != http.StatusUnauthorized:
						bad = "an unauthenticated caller must get 401"
					case c.role == store.RoleReadOnly && r.access == accessAdmin && code != http.StatusForbidden:
						bad = "a read-only token must get 403 on an admin route"
					case c.role != "" && (r.access == accessRead || c.role == store.RoleAdmin) && (code == http.StatusUnauthorized || code == http.StatusForbidden):
						bad = "an allowed caller was refused"
					}
				}
				if bad != "" {
					t.Errorf("%s %s as %s: HTTP %d %s: %s", method, path, c.name, code, strings.TrimSpace(resp), bad)
				}
				if code == http.StatusForbidden && !strings.Contains(resp, `has the role read-only: `+method+" "+path+" needs the role admin") {
					t.Errorf("403 does not say why: %s", resp)
				}
			})
		}
	}

	// The webhook with its HMAC is accepted, whatever bearer is sent.
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write([]byte("{}"))
	sig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if code, resp := e.do(t, "POST", "/api/v1/policy/webhook", readOnly, "{}", "X-Hub-Signature-256", sig); code != http.StatusAccepted {
		t.Errorf("webhook with its HMAC: HTTP %d %s", code, resp)
	}
}

// TestAdminTokensAPI: admin tokens are created, listed and revoked by
// administrators; a new token works at once with its role, a revoked one
// never again; the actor of what a token does is its name.
func TestAdminTokensAPI(t *testing.T) {
	e := newAPIEnv(t)
	code, resp := e.do(t, "POST", "/api/v1/admin-tokens", serverAdminToken, `{"name": "ci-github", "role": "read-only"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: HTTP %d %s", code, resp)
	}
	var created apiv1.AdminTokenCreated
	if err := json.Unmarshal([]byte(resp), &created); err != nil {
		t.Fatal(err)
	}
	if created.Name != "ci-github" || created.Role != store.RoleReadOnly || !strings.HasPrefix(created.Token, "va_"+created.ID+".") {
		t.Errorf("created: %+v", created)
	}
	code, resp = e.do(t, "POST", "/api/v1/admin-tokens", serverAdminToken, `{"name": "alice", "role": "admin"}`)
	var alice apiv1.AdminTokenCreated
	if code != http.StatusCreated || json.Unmarshal([]byte(resp), &alice) != nil {
		t.Fatalf("create alice: HTTP %d %s", code, resp)
	}

	for _, c := range []struct {
		name, body string
		code       int
		msg        string
	}{
		{"same name", `{"name": "ci-github"}`, http.StatusConflict, `an admin token named "ci-github" exists already`},
		{"reserved name", `{"name": "admin"}`, http.StatusBadRequest, `names the server's own admin token`},
		{"bad name", `{"name": "CI GitHub"}`, http.StatusBadRequest, "name: 1 to 63 lower-case letters"},
		{"bad role", `{"name": "x", "role": "root"}`, http.StatusBadRequest, `role: "root" must be read-only or admin`},
	} {
		code, resp := e.do(t, "POST", "/api/v1/admin-tokens", serverAdminToken, c.body)
		var ae apiv1.Error
		_ = json.Unmarshal([]byte(resp), &ae)
		if code != c.code || !strings.Contains(ae.Error, c.msg) {
			t.Errorf("%s: HTTP %d %s, want %d %q", c.name, code, resp, c.code, c.msg)
		}
	}

	// Default role: read-only.
	code, resp = e.do(t, "POST", "/api/v1/admin-tokens", serverAdminToken, `{"name": "dashboards"}`)
	if code != http.StatusCreated || !strings.Contains(resp, `"role": "read-only"`) {
		t.Errorf("default role: HTTP %d %s", code, resp)
	}

	// The read-only token reads and is refused a change.
	if code, resp := e.do(t, "GET", "/api/v1/envoys", created.Token, ""); code != http.StatusOK {
		t.Errorf("read-only lists envoys: HTTP %d %s", code, resp)
	}
	if code, resp := e.do(t, "POST", "/api/v1/policy/explain", created.Token, `{"hostname": "a.approved.test", "ip": "192.0.2.1"}`); code != http.StatusOK {
		t.Errorf("read-only explains: HTTP %d %s", code, resp)
	}
	if code, resp := e.do(t, "POST", "/api/v1/tokens", created.Token, `{"pattern": "a.example.com"}`); code != http.StatusForbidden {
		t.Errorf("read-only creates a token: HTTP %d %s", code, resp)
	}

	// Actors: the named admin, and the server's own token.
	if code, resp := e.do(t, "POST", "/api/v1/tokens", alice.Token, `{"pattern": "a.example.com"}`); code != http.StatusCreated {
		t.Fatalf("alice creates a token: HTTP %d %s", code, resp)
	}
	code, resp = e.do(t, "DELETE", "/api/v1/admin-tokens/ci-github", alice.Token, "")
	if code != http.StatusOK || !strings.Contains(resp, `"revoked_at"`) {
		t.Fatalf("revoke: HTTP %d %s", code, resp)
	}
	if code, resp := e.do(t, "GET", "/api/v1/envoys", created.Token, ""); code != http.StatusUnauthorized {
		t.Errorf("a revoked token: HTTP %d %s", code, resp)
	}
	if code, _ := e.do(t, "DELETE", "/api/v1/admin-tokens/ci-github", alice.Token, ""); code != http.StatusNotFound {
		t.Errorf("revoke twice: HTTP %d", code)
	}
	evs, err := e.store.ListAudit(t.Context(), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	actors := map[string]string{}
	for _, ev := range evs {
		actors[ev.Type+" "+ev.Details["name"]] = ev.Actor
	}
	for k, v := range map[string]string{
		store.AuditAdminTokenCreated + " ci-github": admin.ServerTokenName,
		store.AuditTokenCreated + " ":               "alice",
		store.AuditAdminTokenRevoked + " ci-github": "alice",
	} {
		if actors[k] != v {
			t.Errorf("actor of %q = %q, want %q (all: %v)", k, actors[k], v, actors)
		}
	}

	// The list shows no secret.
	code, resp = e.do(t, "GET", "/api/v1/admin-tokens", serverAdminToken, "")
	if code != http.StatusOK || strings.Contains(resp, created.Token) || strings.Contains(resp, "secret") || !strings.Contains(resp, `"name": "dashboards"`) {
		t.Errorf("list: HTTP %d %s", code, resp)
	}
}
