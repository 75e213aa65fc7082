package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/store"
)

// TestEnvoyListQuery: GET /api/v1/envoys filters, orders and pages through
// store.QueryEnvoys, and refuses a bad parameter with 400 and a message.
func TestEnvoyListQuery(t *testing.T) {
	e := newAPIEnv(t)
	ctx := t.Context()
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	hosts := []string{"c.web.test", "a.web.test", "b.db.test", "d.web.test"}
	for i, h := range hosts {
		env := store.Envoy{UUID: "00000000-0000-4000-8000-00000000000" + string(rune('1'+i)), Hostname: h, Method: "approved",
			Rule: "r", PolicyRevision: "rev", CertSerial: "s" + h, CreatedAt: t0.Add(time.Duration(i) * time.Minute),
			CertNotAfter: t0.Add(24 * time.Hour)}
		if _, err := e.store.Enroll(ctx, store.EnrollParams{Envoy: env, Now: env.CreatedAt, Audit: store.AuditEvent{At: env.CreatedAt, Type: store.AuditRegistration}}); err != nil {
			t.Fatalf("enroll %s: %v", h, err)
		}
	}
	list := func(q string) []string {
		t.Helper()
		code, body := e.do(t, "GET", "/api/v1/envoys?"+q, serverAdminToken, "")
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		var es []apiv1.Envoy
		if err := json.Unmarshal([]byte(body), &es); err != nil {
			t.Fatal(err)
		}
		var hs []string
		for _, x := range es {
			hs = append(hs, x.Hostname)
		}
		return hs
	}
	for _, tc := range []struct{ q, want string }{
		{"", "a.web.test b.db.test c.web.test d.web.test"},
		{"sort=created", "c.web.test a.web.test b.db.test d.web.test"},
		{"sort=created&desc=true&limit=2", "d.web.test b.db.test"},
		{"hostname=*.web.test&limit=2", "a.web.test c.web.test"},
		{"hostname=b.db.test", "b.db.test"},
		{"stale=30m", "a.web.test b.db.test c.web.test d.web.test"},
		{"stale=2h", ""},
		{"method=token", ""},
		{"status=all&rule=r&revision=rev&limit=1", "a.web.test"},
	} {
		if got := strings.Join(list(tc.q), " "); got != tc.want {
			t.Errorf("?%s: %q, want %q", tc.q, got, tc.want)
		}
	}
	// Pages with the cursor of the last envoy, in each order.
	for _, sort := range []string{"hostname", "created", "seen"} {
		var all []string
		after := ""
		for range 5 {
			q := url.Values{"sort": {sort}, "limit": {"3"}, "hostname": {"*.test"}}
			if after != "" {
				q.Set("after", after)
			}
			code, body := e.do(t, "GET", "/api/v1/envoys?"+q.Encode(), serverAdminToken, "")
			var es []apiv1.Envoy
			if code != 200 || json.Unmarshal([]byte(body), &es) != nil {
				t.Fatalf("%s: %d %s", q.Encode(), code, body)
			}
			for _, x := range es {
				all = append(all, x.Hostname)
			}
			if len(es) < 3 {
				break
			}
			after = es[len(es)-1].Cursor(sort)
		}
		if len(all) != 4 {
			t.Errorf("sort %s: pages gave %v", sort, all)
		}
	}
	for _, q := range []string{"status=gone", "sort=size", "desc=maybe", "stale=soon", "stale=-1h", "limit=-1", "after=xyz",
		"hostname=a..b", "after=" + (apiv1.Envoy{Hostname: "a", UUID: "u"}).Cursor("hostname") + "&sort=created"} {
		code, body := e.do(t, "GET", "/api/v1/envoys?"+q, serverAdminToken, "")
		var msg apiv1.Error
		if code != http.StatusBadRequest || json.Unmarshal([]byte(body), &msg) != nil || msg.Error == "" {
			t.Errorf("?%s: %d %s; want 400 with a message", q, code, body)
		}
	}
}
