package server_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// TestFleetMetrics (issue 17, item 3): /metrics carries vigo_build_info
// and the fleet's gauges, counted from the store.
func TestFleetMetrics(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	var uuids []string
	for _, h := range []string{"a.approved.test", "b.approved.test", "c.approved.test"} {
		code, body := in.Register(t, servertest.NewIdentity(t, h).Req)
		if code != 200 {
			t.Fatalf("register %s: HTTP %d %s", h, code, body)
		}
		var r apiv1.RegisterResponse
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		uuids = append(uuids, r.UUID)
	}
	if code, body := in.Do(t, "POST", "/api/v1/envoys/"+uuids[0]+"/revoke", apiv1.EnvoyRevokeRequest{Reason: "test"}, true); code != 200 {
		t.Fatalf("revoke: HTTP %d %s", code, body)
	}
	code, body := in.Do(t, "GET", "/metrics", nil, true)
	if code != 200 {
		t.Fatalf("/metrics: HTTP %d", code)
	}
	text := string(body)
	for _, want := range []string{
		`vigo_envoys{status="active"} 2`,
		`vigo_envoys{status="revoked"} 1`,
		`vigo_envoys_stale 0`,
		// No check-in yet: the version is empty.
		`vigo_envoys_agent_version{version=""} 2`,
		// Certificates are valid for a year (the policy's default).
		`vigo_envoy_certificates_expiring{within="7d"} 0`,
		`vigo_envoy_certificates_expiring{within="30d"} 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^vigo_build_info\{commit="[^"]*",goversion="go[^"]+",version="[^"]+"\} 1$`).MatchString(text) {
		t.Errorf("/metrics lacks vigo_build_info:\n%s", grepLines(text, "vigo_build_info"))
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
