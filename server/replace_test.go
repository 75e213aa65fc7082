package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// TestIssue12Item10ReplaceByForce: who may replace an active envoy with
// --force is the admitting rule's replace setting. Before it, anyone who
// matched an approved glob could force-replace (and so revoke) the envoy of
// that hostname and take its identity (security review L11).
func TestIssue12Item10ReplaceByForce(t *testing.T) {
	in := servertest.Start(t, servertest.Options{Policy: `package policy

trusted_enrollment: [{name: "lab", pattern: "*.lab.test", cidrs: ["127.0.0.0/8", "::1/128"], replace: "token"}]
approved: [
	{pattern: "*.web.test", replace: "proof"},
	"*.any.test",
]
`})
	register := func(host, tok string, force bool) (int, apiv1.RegisterResponse, string) {
		t.Helper()
		req := servertest.NewIdentity(t, host).Req
		req.Token, req.Force = tok, force
		return registerOn(t, in, req)
	}
	active := func(host string) string {
		t.Helper()
		code, body := in.Do(t, "GET", "/api/v1/envoys/"+host, nil, true)
		if code != http.StatusOK {
			t.Fatalf("show %s: HTTP %d %s", host, code, body)
		}
		return decode[apiv1.Envoy](t, body).UUID
	}

	// replace: proof on an approved glob: nobody but the envoy itself.
	_, first, _ := register("shop.web.test", "", false)
	code, _, msg := register("shop.web.test", "", true)
	if code != http.StatusConflict || !strings.Contains(msg, `approved "*.web.test" lets only that envoy replace itself (replace: proof`) {
		t.Errorf("force over a proof rule: HTTP %d %q, want 409 naming the rule", code, msg)
	}
	tok := in.Token(t, "shop.web.test", "")
	if code, _, msg := register("shop.web.test", tok.Token, true); code != http.StatusConflict {
		t.Errorf("force with a token over a proof rule: HTTP %d %q, want 409 (a token is not enough)", code, msg)
	}
	if got := active("shop.web.test"); got != first.UUID {
		t.Errorf("active envoy of shop.web.test = %s, want the first %s (not taken over)", got, first.UUID)
	}

	// The default (any): the seed's behaviour, a force replaces.
	register("box.any.test", "", false)
	if code, r, msg := register("box.any.test", "", true); code != http.StatusOK || len(r.Replaced) != 1 {
		t.Errorf("force over an approved glob without replace: HTTP %d %q replaced %v, want 200 replacing one", code, msg, r.Replaced)
	}

	// replace: token on a trusted rule: with a token bound to the host.
	register("pc.lab.test", "", false)
	if code, _, msg := register("pc.lab.test", "", true); code != http.StatusConflict || !strings.Contains(msg, "lets only a token bound to pc.lab.test") {
		t.Errorf("force without a token over a token rule: HTTP %d %q, want 409", code, msg)
	}
	tok = in.Token(t, "pc.lab.test", "")
	code, r, msg := register("pc.lab.test", tok.Token, true)
	if code != http.StatusOK || r.Method != "token" || len(r.Replaced) != 1 {
		t.Errorf("force with a token over a token rule: HTTP %d %q method %s, want 200 by the token", code, msg, r.Method)
	}
	// A registration that replaces nothing needs no permission.
	if code, _, msg := register("new.web.test", "", true); code != http.StatusOK {
		t.Errorf("force with no active envoy: HTTP %d %q, want 200", code, msg)
	}
}
