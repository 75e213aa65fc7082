package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
	"github.com/vigo-enroll/vigo/server/store/storetest"
)

// benchAuth lets one credential in.
type benchAuth struct{}

func (benchAuth) Authenticate(_ context.Context, c string) (admin.Caller, error) {
	if c == "bench" {
		return admin.Caller{Name: "bench", Role: admin.RoleAdmin}, nil
	}
	return admin.Caller{}, admin.ErrInvalidCredential
}

// BenchmarkEnvoysPage100k measures the server's time to render the envoys
// page (query, count, template) with 100,000 envoys in SQLite: the first
// page, filtered pages, and a deep page 90,000 envoys in. BENCHMARKS.md
// reports it; the budget is 50 ms per page.
func BenchmarkEnvoysPage100k(b *testing.B) {
	const n = 100_000
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	st, err := sqlitestore.Open(b.Context(), filepath.Join(b.TempDir(), "vigo.db"), sqlitestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	storetest.Fleet(b, st, n, now)
	b.Logf("filled %d envoys in %s", n, time.Since(start).Round(time.Second))
	ops, err := admin.New(admin.Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	c, err := New(Config{Store: st, Ops: ops, Auth: benchAuth{}, CheckinInterval: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	cookie := benchSignIn(b, c)

	// The envoy 90,000 places into the hostname order: a deep page.
	all, err := st.QueryEnvoys(b.Context(), store.EnvoyQuery{})
	if err != nil || len(all) != n {
		b.Fatalf("QueryEnvoys = %d, %v", len(all), err)
	}
	deep := formatCursor(store.EnvoyQuery{}, all[90_000])
	deepSeen, err := st.QueryEnvoys(b.Context(), store.EnvoyQuery{Sort: store.SortSeen})
	if err != nil {
		b.Fatal(err)
	}
	deepBySeen := formatCursor(store.EnvoyQuery{Sort: store.SortSeen}, deepSeen[90_000])
	all, deepSeen = nil, nil

	for _, bc := range []struct{ name, query string }{
		{"first page", ""},
		{"first page active", "?status=active"},
		{"filtered method+rule", "?method=approved&rule=" + url.QueryEscape(`approved "*.db.example.com"`)},
		{"filtered revision+version", "?revision=main@sha1:4e5f6a7b&version=v1.2.0"},
		{"search", "?q=team13"},
		{"search rare", "?q=h4242."},
		{"stale", "?status=active&stale=1"},
		{"deep page", "?after=" + deep},
		{"deep page newest first", "?sort=created&desc=1&after=" + formatCursor(store.EnvoyQuery{Sort: store.SortCreated, Desc: true}, store.Envoy{CreatedAt: now.Add(-90_000 * time.Second), UUID: "00000000-0000-4000-8000-000000010000"})},
		{"by last seen", "?sort=seen"},
		{"deep page by last seen", "?sort=seen&after=" + deepBySeen},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/ui/envoys"+bc.query, nil)
			req.AddCookie(cookie)
			for b.Loop() {
				w := httptest.NewRecorder()
				c.ServeHTTP(w, req)
				if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `class="envoy"`) {
					b.Fatalf("GET %s: HTTP %d\n%.2000s", bc.query, w.Code, w.Body.String())
				}
			}
		})
	}
}

var benchCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// benchSignIn signs in through the handler and returns the session cookie.
func benchSignIn(b *testing.B, c *Console) *http.Cookie {
	b.Helper()
	w := httptest.NewRecorder()
	c.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/ui/sign-in", nil))
	pre := w.Result().Cookies()
	m := benchCSRF.FindStringSubmatch(w.Body.String())
	if m == nil || len(pre) == 0 {
		b.Fatal("no sign-in form")
	}
	req := httptest.NewRequest(http.MethodPost, "/ui/sign-in", strings.NewReader(url.Values{"csrf": {m[1]}, "credential": {"bench"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(pre[0])
	w = httptest.NewRecorder()
	c.ServeHTTP(w, req)
	for _, ck := range w.Result().Cookies() {
		if ck.Name == sessionCookie && ck.Value != "" {
			return ck
		}
	}
	b.Fatalf("sign in: HTTP %d", w.Code)
	return nil
}
