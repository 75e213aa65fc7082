package console_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
	"github.com/vigo-enroll/vigo/server/store"
)

// agentServer starts a server that serves the real agent (v1.0.0, built
// once per test binary) and returns it with the agent's build.
func agentServer(t *testing.T) (*servertest.Instance, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the agent and runs it against a server")
	}
	chromiumPath(t) // skip (loudly) before building anything
	build := servertest.AgentBinary(t, "v1.0.0")
	dist := t.TempDir()
	servertest.WriteDist(t, dist, build, "v1.0.0", nil)
	in := servertest.Start(t, servertest.Options{Config: func(c *server.Config) { c.Agent.DistDir = dist }})
	return in, build
}

// registerAgent enrolls a host with `vigo register` (no token: the test
// policy trusts *.trusted.test from loopback) and returns its config folder.
func registerAgent(t *testing.T, in *servertest.Instance, build, hostname string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "etc")
	port := strconv.Itoa(in.APIAddr().(*net.TCPAddr).Port)
	r := servertest.Exec(t, nil, build, "register", "--server", "127.0.0.1:"+port, "--config-dir", dir, "--hostname", hostname)
	if r.Code != 0 {
		t.Fatalf("vigo register %s: %s", hostname, r)
	}
	return dir
}

func runOnce(t *testing.T, build, dir string) servertest.Result {
	t.Helper()
	return servertest.Exec(t, nil, build, "run", "--once", "--config-dir", dir)
}

// TestConsoleSignInSignOut: signed out, every console page (and /) leads
// to the sign-in page, while /bootstrap and /api/v1/agent/* stay open; a
// wrong credential is refused; the right one lands on the page asked for;
// the session cookie is out of JavaScript's reach; signing out ends it.
func TestConsoleSignInSignOut(t *testing.T) {
	in, _ := agentServer(t)
	b := newBrowser(t, in.URL)

	b.open("/")
	if p := b.path(); p != "/ui/sign-in?next=%2Fui%2F" {
		t.Errorf("/ leads to %s, want the sign-in page", p)
	}
	for _, path := range []string{"/ui/", "/ui/envoys", "/ui/envoys/web1.trusted.test", "/ui/policy", "/ui/tokens", "/ui/audit?type=registration"} {
		b.open(path)
		if p, want := b.path(), "/ui/sign-in?next="; !strings.HasPrefix(p, want) {
			t.Errorf("signed out, %s leads to %s, want the sign-in page", path, p)
		}
	}
	// The open routes answer without a session or a credential.
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/bootstrap", "", http.StatusOK},
		{"GET", "/bootstrap?os=windows", "", http.StatusOK},
		{"GET", "/api/v1/agent/latest?os=linux&arch=amd64", "", http.StatusOK},
		{"GET", "/api/v1/agent/download/linux/amd64", "", http.StatusOK},
		{"POST", "/api/v1/bootstrap/register", "{}", http.StatusBadRequest}, // open: judged on its content
	} {
		req, _ := http.NewRequest(tc.method, in.URL+tc.path, strings.NewReader(tc.body))
		if tc.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := in.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s signed out: HTTP %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}

	b.open("/ui/sign-in?next=" + "%2Fui%2Fenvoys%3Fstatus%3Dactive")
	if code := b.signIn("va_not-the-token"); code != http.StatusUnauthorized {
		t.Errorf("wrong credential: HTTP %d, want 401", code)
	}
	if msg := b.text("#error"); !strings.Contains(msg, "not valid") {
		t.Errorf("wrong credential: message %q", msg)
	}
	b.open("/ui/sign-in?next=" + "%2Fui%2Fenvoys%3Fstatus%3Dactive")
	b.screenshot("sign-in")
	if code := b.signIn(in.AdminToken); code != http.StatusOK {
		t.Fatalf("sign in: HTTP %d", code)
	}
	if p := b.path(); p != "/ui/envoys?status=active" {
		t.Errorf("signed in at %s, want the page asked for", p)
	}
	if who := b.text("#who"); !strings.Contains(who, "admin") {
		t.Errorf("signed in as %q", who)
	}
	if c := eval[string](b, "document.cookie"); strings.Contains(c, "vigo-session") {
		t.Errorf("JavaScript reads the session cookie: %q", c)
	}
	b.submit("#sign-out")
	if p := b.path(); p != "/ui/sign-in" {
		t.Errorf("signed out at %s", p)
	}
	b.open("/ui/tokens")
	if p := b.path(); !strings.HasPrefix(p, "/ui/sign-in?next=") {
		t.Errorf("after signing out, /ui/tokens leads to %s", p)
	}
	// Both sign-ins are in the audit log, the refused one too.
	evs, err := in.Store().QueryAudit(t.Context(), store.AuditQuery{Types: []string{store.AuditConsoleSignIn, store.AuditConsoleSignOut}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.Type+"/"+ev.Result)
	}
	if want := "console.sign_out/ok console.sign_in/ok console.sign_in/denied"; strings.Join(got, " ") != want {
		t.Errorf("audit %v, want %s", got, want)
	}
}

// TestConsoleRevokeRefusesTheAgent: an envoy enrolled with the agent
// appears in the console; revoking it from its page makes its next
// `vigo run --once` refused.
func TestConsoleRevokeRefusesTheAgent(t *testing.T) {
	in, build := agentServer(t)
	dir := registerAgent(t, in, build, "laptop7.trusted.test")
	if r := runOnce(t, build, dir); r.Code != 0 {
		t.Fatalf("run --once: %s", r)
	}
	f, err := agent.ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	in.WaitEnvoy(t, f.UUID, func(e apiv1.Envoy) bool { return e.LastSeen != nil }) // check-ins are written in batches

	b := newBrowser(t, in.URL)
	b.open("/ui/envoys")
	b.signIn(in.AdminToken)
	b.fill("#q", "laptop7")
	b.submit("#filter")
	if got := b.text("#envoys tbody"); !strings.Contains(got, "laptop7.trusted.test") || !strings.Contains(got, "v1.0.0") {
		t.Fatalf("the envoy list lacks the enrolled agent:\n%s", got)
	}
	b.submit("a.envoy")
	if p := b.path(); p != "/ui/envoys/"+f.UUID {
		t.Fatalf("envoy page at %s, want /ui/envoys/%s", p, f.UUID)
	}
	facts := b.text("#envoy-facts")
	for _, want := range []string{f.UUID, "v1.0.0", "trusted_enrollment \"loopback\"", "127.0.0.1"} {
		if !strings.Contains(facts, want) {
			t.Errorf("envoy page lacks %q:\n%s", want, facts)
		}
	}
	b.fill("#reason", "laptop stolen")
	if code := b.submit("#revoke"); code != http.StatusOK {
		t.Fatalf("revoke: HTTP %d", code)
	}
	if flash := b.text("#flash"); !strings.Contains(flash, "revoked") {
		t.Errorf("after revoking: flash %q", flash)
	}
	if st := b.text("#envoy-status"); st != "revoked" {
		t.Errorf("status shown %q, want revoked", st)
	}
	if b.has("#actions") {
		t.Error("a revoked envoy still has actions")
	}

	r := runOnce(t, build, dir)
	if r.Code != agent.ExitRevoked || !strings.Contains(r.Stderr, "laptop stolen") {
		t.Fatalf("run --once after revoking in the console: exit %d, want %d with the reason\n%s", r.Code, agent.ExitRevoked, r)
	}
	evs, err := in.Store().QueryAudit(t.Context(), store.AuditQuery{EnvoyUUID: f.UUID, Types: []string{store.AuditEnvoyRevoked}})
	if err != nil || len(evs) != 1 || evs[0].Reason != "laptop stolen" {
		t.Errorf("revocation audit = %+v, %v", evs, err)
	}
}

// TestConsoleTokenEnrolls: a token created in the console is shown once
// with its one-liner, and that one-liner enrolls the host.
func TestConsoleTokenEnrolls(t *testing.T) {
	in, _ := agentServer(t)
	b := newBrowser(t, in.URL)
	b.open("/ui/tokens")
	b.signIn(in.AdminToken)
	b.fill("#pattern", "web7.example.com")
	b.fill("#ttl", "1h")
	b.fill("#note", "rack 7")
	if code := b.submit("#create-token"); code != http.StatusCreated {
		t.Fatalf("create token: HTTP %d", code)
	}
	line, err := chromedp.Run(b.ctx, chromedp.Value(chromedp.CSS("#one-liner")))
	if err != nil {
		t.Fatal(err)
	}
	b.screenshot("tokens")
	// export VIGO_TOKEN=vt_…; curl -sSfk --pinnedpubkey 'sha256//PIN' URL/bootstrap | sudo --preserve-env=VIGO_TOKEN sh -s -- --ca-fingerprint F
	m := regexp.MustCompile(`^export VIGO_TOKEN=(vt_[^ ;]+); curl -sSfk --pinnedpubkey '(sha256//[A-Za-z0-9+/=]+)' ` + regexp.QuoteMeta(in.URL) +
		`/bootstrap \| sudo --preserve-env=VIGO_TOKEN sh -s -- --ca-fingerprint ([0-9a-f]{64})$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("one-liner %q is not the server's (export VIGO_TOKEN=…; curl … --pinnedpubkey … | sudo --preserve-env=VIGO_TOKEN sh -s -- --ca-fingerprint …)", line)
	}
	tok := m[1]

	// The one-liner, as a host runs it (without sudo, into a prefix), with
	// the pins it prints.
	h := t.TempDir()
	r := in.BootstrapWith(t, servertest.BootstrapOptions{CurlArgs: []string{"-sSfk", "--pinnedpubkey", m[2]}, Env: []string{"VIGO_TOKEN=" + tok}},
		[]string{"sh"}, "--ca-fingerprint", m[3], "--hostname", "web7.example.com", "--prefix", h, "--no-service")
	if r.Code != 0 || !strings.Contains(r.Stdout, "this host is enrolled") {
		t.Fatalf("the console's one-liner: %s", r)
	}

	b.open("/ui/tokens")
	if html := eval[string](b, "document.documentElement.outerHTML"); strings.Contains(html, tok) {
		t.Error("the token's secret is shown again")
	}
	if row := b.text("#tokens tbody"); !strings.Contains(row, "web7.example.com") || !strings.Contains(row, "used") || !strings.Contains(row, "rack 7") {
		t.Errorf("tokens list after enrolling:\n%s", row)
	}
	b.open("/ui/envoys?q=web7")
	if row := b.text("#envoys tbody"); !strings.Contains(row, "web7.example.com") || !strings.Contains(row, "token") {
		t.Errorf("envoys after enrolling with the token:\n%s", row)
	}
}

// TestConsoleRefusedRevisionShowsFileLine: a policy revision the server
// refuses is shown with its errors as file:line:col, and the last good
// revision stays active.
func TestConsoleRefusedRevisionShowsFileLine(t *testing.T) {
	chromiumPath(t)
	in := servertest.Start(t, servertest.Options{})
	good := in.PolicyStatus(t).Active.Revision
	bad := servertest.DefaultPolicy + "\napproved: [\"*.ok.test\", 42]\n"
	if err := os.WriteFile(filepath.Join(in.PolicyDir, "policy.cue"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	in.Reload()
	var st apiv1.PolicyStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		st = in.PolicyStatus(t)
		if st.Attempted != nil && !st.Attempted.Valid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bad revision was not refused within 30s: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(st.Attempted.Errors) == 0 || st.Attempted.Errors[0].Line == 0 {
		t.Fatalf("refusal without a position: %+v", st.Attempted)
	}
	e := st.Attempted.Errors[0]
	at := (&policy.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Message}).Error()

	b := newBrowser(t, in.URL)
	b.open("/ui/policy")
	b.signIn(in.AdminToken)
	refused := b.text("#refused")
	if !strings.Contains(refused, at) || !strings.HasPrefix(at, "policy.cue:"+strconv.Itoa(e.Line)+":"+strconv.Itoa(e.Col)+": ") {
		t.Errorf("the refused revision's errors lack %q:\n%s", at, refused)
	}
	if rev := b.text("#active-revision"); !strings.Contains(rev, good) {
		t.Errorf("active revision shown %q, want the last good one %s", rev, good)
	}
	if hist := b.text("#history"); !strings.Contains(hist, "refused") || !strings.Contains(hist, "applied") {
		t.Errorf("history lacks the verdicts:\n%s", hist)
	}
	b.screenshot("policy")
}

// TestConsoleFormWithoutCSRFRefused: in the browser, a form whose CSRF
// token was removed is refused and changes nothing.
func TestConsoleFormWithoutCSRFRefused(t *testing.T) {
	chromiumPath(t)
	in := servertest.Start(t, servertest.Options{})
	id := servertest.NewIdentity(t, "web2.trusted.test")
	code, body := in.Register(t, id.Req)
	if code != http.StatusOK {
		t.Fatalf("register: %d %s", code, body)
	}
	var reg apiv1.RegisterResponse
	if err := json.Unmarshal(body, &reg); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, in.URL)
	b.open("/ui/envoys/" + reg.UUID)
	b.signIn(in.AdminToken)
	eval[bool](b, `(document.querySelector('#revoke-form input[name=csrf]').remove(), true)`)
	b.fill("#reason", "forged")
	if code := b.submit("#revoke"); code != http.StatusForbidden {
		t.Errorf("revoke without the CSRF token: HTTP %d, want 403", code)
	}
	if msg := b.text("#error"); !strings.Contains(msg, "security token") {
		t.Errorf("message %q", msg)
	}
	if e := in.Envoy(t, reg.UUID); e.Status != "active" {
		t.Errorf("envoy %s after a form without CSRF token, want active", e.Status)
	}
}

// TestConsoleReadOnlySession: a read-only session (a credential source
// with roles standing in for issue 13's named tokens) has no action
// button, and each action posted anyway, with the session's own CSRF
// token, is refused.
func TestConsoleReadOnlySession(t *testing.T) {
	chromiumPath(t)
	f := newFixture(t, nil)
	e := enroll(t, f.store, 1, "web1.example.com", t0)
	b := newBrowser(t, f.url)
	b.open("/ui/envoys/" + e.UUID)
	b.signIn(roSecret)
	if !b.has("#read-only") || b.has("#actions") {
		t.Error("read-only envoy page: want the banner and no actions")
	}
	for _, path := range []string{"/ui/", "/ui/envoys", "/ui/envoys/" + e.UUID, "/ui/policy", "/ui/tokens", "/ui/audit"} {
		b.open(path)
		if n := b.count(`form[method="post"]:not([action="/ui/sign-out"])`); n != 0 {
			t.Errorf("%s: %d action forms in a read-only session", path, n)
		}
	}
	codes := eval[[]int](b, `(async () => {
		const csrf = document.querySelector('input[name=csrf]').value;
		const codes = [];
		for (const p of ["/ui/envoys/`+e.UUID+`/revoke", "/ui/envoys/`+e.UUID+`/rebootstrap", "/ui/envoys/`+e.UUID+`/update", "/ui/tokens"]) {
			const r = await fetch(p, {method: "POST", body: new URLSearchParams({csrf, reason: "x", version: "v2", pattern: "y.example.com"})});
			codes.push(r.status);
		}
		return codes;
	})()`)
	for i, c := range codes {
		if c != http.StatusForbidden {
			t.Errorf("action %d from a read-only session: HTTP %d, want 403", i, c)
		}
	}
	if len(codes) != 4 {
		t.Errorf("%d actions tried, want 4", len(codes))
	}
	if got, _ := f.store.GetEnvoy(t.Context(), e.UUID); got.Status != store.StatusActive || got.Rebootstrap || got.UpdateVersion != "" {
		t.Errorf("a read-only session changed the envoy: %+v", got)
	}
	if ts, _ := f.store.ListTokens(t.Context()); len(ts) != 0 {
		t.Errorf("a read-only session created tokens: %+v", ts)
	}
}

// TestConsoleAuditFollowsLive: the audit page shows a new event without
// being reloaded (the page's script, allowed by the CSP, refreshes it).
func TestConsoleAuditFollowsLive(t *testing.T) {
	chromiumPath(t)
	in := servertest.Start(t, servertest.Options{})
	b := newBrowser(t, in.URL)
	b.open("/ui/audit")
	b.signIn(in.AdminToken)
	eval[bool](b, "(window.vigoNotReloaded = true)")
	tok := in.Token(t, "live.example.com", "")
	b.waitFor("the new event on the audit page", `window.vigoNotReloaded === true && document.querySelector("#audit").textContent.includes("`+tok.ID+`")`)
}

// TestConsoleScreenshots tours every page of a small fleet and takes a
// screenshot of each (go test ./server/console -run TestConsoleScreenshots
// -update-screenshots writes them to docs/screenshots for the README).
func TestConsoleScreenshots(t *testing.T) {
	in, build := agentServer(t)
	var dirs []string
	for _, h := range []string{"web1.trusted.test", "web2.trusted.test", "db1.trusted.test", "cache1.trusted.test"} {
		dir := registerAgent(t, in, build, h)
		if r := runOnce(t, build, dir); r.Code != 0 {
			t.Fatalf("run --once: %s", r)
		}
		dirs = append(dirs, dir)
	}
	for _, h := range []string{"build1.approved.test", "build2.approved.test", "gone.approved.test", "x1.example.com", "x2.example.com", "10.0.0.7.example.com"} {
		in.Register(t, servertest.NewIdentity(t, h).Req) // some refused: the overview counts reasons
	}
	tok := in.Token(t, "web9.example.com", "")
	in.Token(t, "*.lab.example.com", "2h")
	port := strconv.Itoa(in.APIAddr().(*net.TCPAddr).Port)
	if r := servertest.Exec(t, nil, build, "register", "--server", "127.0.0.1:"+port, "--token", tok.Token,
		"--config-dir", filepath.Join(t.TempDir(), "etc"), "--hostname", "web9.example.com"); r.Code != 0 {
		t.Fatalf("register with a token: %s", r)
	}
	f, err := agent.ReadFile(dirs[3])
	if err != nil {
		t.Fatal(err)
	}
	if code, body := in.Do(t, http.MethodPost, "/api/v1/envoys/"+f.UUID+"/revoke", apiv1.EnvoyRevokeRequest{Reason: "decommissioned"}, true); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, body)
	}
	f, err = agent.ReadFile(dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	in.WaitEnvoy(t, f.UUID, func(e apiv1.Envoy) bool { return e.LastSeen != nil })

	b := newBrowser(t, in.URL)
	b.open("/ui/")
	b.signIn(in.AdminToken)
	b.screenshot("overview")
	b.open("/ui/envoys")
	b.screenshot("envoys")
	b.open("/ui/envoys/" + f.UUID)
	b.screenshot("envoy")
	b.open("/ui/audit")
	b.screenshot("audit")
	b.open("/ui/policy?hostname=web3.example.com&ip=10.1.2.3")
	b.screenshot("policy-explain")
	for _, path := range []string{"/ui/", "/ui/envoys", "/ui/envoys/" + f.UUID, "/ui/audit", "/ui/policy", "/ui/tokens"} {
		if code := b.open(path); code != http.StatusOK {
			t.Errorf("GET %s: HTTP %d", path, code)
		}
	}
}
