package server_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/token"
)

func decode[T any](t testing.TB, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

func TestRegisterTrustedApprovedAndToken(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})

	code, body := in.Register(t, servertest.NewIdentity(t, "Web1.Trusted.Test.").Req)
	if code != 200 {
		t.Fatalf("trusted: HTTP %d %s", code, body)
	}
	r := decode[apiv1.RegisterResponse](t, body)
	if r.Method != "trusted" || r.Rule != `trusted_enrollment "loopback"` || r.Hostname != "web1.trusted.test" || r.PolicyRevision == "" {
		t.Fatalf("trusted: got %+v", r)
	}
	if !strings.Contains(r.Certificate, "BEGIN CERTIFICATE") || !strings.Contains(r.CA, "BEGIN CERTIFICATE") || r.GRPCAddress == "" || r.ServerPublicKey == "" {
		t.Fatalf("trusted: incomplete answer %+v", r)
	}

	code, body = in.Register(t, servertest.NewIdentity(t, "db1.approved.test").Req)
	if code != 200 || decode[apiv1.RegisterResponse](t, body).Method != "approved" {
		t.Fatalf("approved: HTTP %d %s", code, body)
	}

	tok := in.Token(t, "web1.example.com", "")
	req := servertest.NewIdentity(t, "web1.example.com").Req
	req.Token = tok.Token
	code, body = in.Register(t, req)
	if code != 200 {
		t.Fatalf("token: HTTP %d %s", code, body)
	}
	tr := decode[apiv1.RegisterResponse](t, body)
	if tr.Method != "token" {
		t.Fatalf("token: method %q", tr.Method)
	}

	// The envoy records the method, rule and policy revision.
	code, body = in.Do(t, "GET", "/api/v1/envoys/web1.example.com", nil, true)
	if code != 200 {
		t.Fatalf("show envoy: HTTP %d %s", code, body)
	}
	e := decode[apiv1.Envoy](t, body)
	if e.UUID != tr.UUID || e.Method != "token" || e.PolicyRevision != tr.PolicyRevision || e.Status != "active" || e.SourceIP != "127.0.0.1" || e.TokenID != tok.ID {
		t.Fatalf("envoy record: %+v", e)
	}
	// The token is used by that envoy.
	code, body = in.Do(t, "GET", "/api/v1/tokens", nil, true)
	toks := decode[[]apiv1.Token](t, body)
	if code != 200 || len(toks) != 1 || toks[0].State != "used" || toks[0].UsedBy != tr.UUID {
		t.Fatalf("tokens after use: HTTP %d %+v", code, toks)
	}
	if strings.Contains(string(body), tok.Token[14:]) {
		t.Fatal("tokens list shows the secret")
	}
}

func TestTokenUsedOnceUnderRace(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	tok := in.Token(t, "*.race.example.com", "")
	const n = 100
	reqs := make([]apiv1.RegisterRequest, n)
	for i := range reqs {
		reqs[i] = servertest.NewIdentity(t, "h"+string(rune('a'+i%26))+strings.Repeat("x", i/26)+".race.example.com").Req
		reqs[i].Token = tok.Token
	}
	var wg sync.WaitGroup
	codes := make([]int, n)
	bodies := make([][]byte, n)
	start := make(chan struct{})
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes[i], bodies[i] = in.Register(t, reqs[i])
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, c := range codes {
		switch c {
		case 200:
			ok++
		case 403:
			if msg := servertest.ErrorOf(bodies[i]); !strings.Contains(msg, "already been used") {
				t.Errorf("loser %d: %q", i, msg)
			}
		default:
			t.Errorf("request %d: HTTP %d %s", i, c, bodies[i])
		}
	}
	if ok != 1 {
		t.Fatalf("%d registrations succeeded with one token, want exactly 1", ok)
	}
	envoys, err := in.Store().ListEnvoys(t.Context(), store.EnvoyFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(envoys) != 1 {
		t.Fatalf("%d envoys stored, want 1", len(envoys))
	}
	st, err := in.Store().GetToken(t.Context(), tok.ID)
	if err != nil || st.UsedBy != envoys[0].UUID {
		t.Fatalf("token used by %q, envoy %q (%v)", st.UsedBy, envoys[0].UUID, err)
	}
}

func TestRefusals(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	other := servertest.NewIdentity(t, "x.example.com")
	good := func(h string) apiv1.RegisterRequest { return servertest.NewIdentity(t, h).Req }
	withToken := func(h, tok string) apiv1.RegisterRequest { r := good(h); r.Token = tok; return r }

	used := in.Token(t, "u.example.com", "")
	if c, b := in.Register(t, withToken("u.example.com", used.Token)); c != 200 {
		t.Fatalf("first use: %d %s", c, b)
	}
	revoked := in.Token(t, "r.example.com", "")
	if c, b := in.Do(t, "DELETE", "/api/v1/tokens/"+revoked.ID, nil, true); c != 200 {
		t.Fatalf("revoke token: %d %s", c, b)
	}
	// An expired token, made in the store with an expiry in the past (the
	// API refuses to make one).
	gen := token.Generate()
	hash, err := token.Hash(gen)
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour)
	if err := in.Store().CreateToken(t.Context(), store.Token{ID: gen.ID, SecretHash: hash, Pattern: "e.example.com",
		CreatedAt: past.Add(-time.Hour), ExpiresAt: past}, store.AuditEvent{At: past, Type: store.AuditTokenCreated}); err != nil {
		t.Fatal(err)
	}
	expired := apiv1.TokenCreated{ID: gen.ID, Token: gen.String()}
	another := in.Token(t, "p.example.com", "")
	fake := "vt_aaaaaaaaaa." + strings.Repeat("b", 32)
	if c, b := in.Register(t, good("dup.trusted.test")); c != 200 {
		t.Fatalf("first dup: %d %s", c, b)
	}

	badCSR := good("a.trusted.test")
	badCSR.CSR = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
	keyMismatch := good("b.trusted.test")
	keyMismatch.CSR = other.Req.CSR
	cnMismatch := servertest.RequestFor(t, "c.trusted.test", other.Key.Public().(ed25519.PublicKey), other.Key, "evil.trusted.test")

	cases := []struct {
		name string
		req  apiv1.RegisterRequest
		code int
		want string
	}{
		{"bad CSR", badCSR, 400, "csr:"},
		{"CSR key is not public_key", keyMismatch, 400, "csr: its key is not public_key"},
		{"CN is not hostname", cnMismatch, 400, `common name "evil.trusted.test" is not the hostname "c.trusted.test"`},
		{"missing hostname", apiv1.RegisterRequest{}, 400, "hostname: required"},
		{"expired token", withToken("e.example.com", expired.Token), 403, "expired"},
		{"used token", withToken("u.example.com", used.Token), 403, "already been used"},
		{"revoked token", withToken("r.example.com", revoked.Token), 403, "has been revoked"},
		{"token for another pattern", withToken("q.example.com", another.Token), 403, "p.example.com"},
		{"unknown token id", withToken("q.example.com", fake), 403, "token is not valid"},
		{"malformed token", withToken("q.example.com", "hello"), 403, "token is not valid"},
		{"revoked hostname", good("gone.approved.test"), 403, "revoked"},
		{"no rule matched", good("nobody.example.org"), 403, "no rule"},
		{"duplicate hostname", good("dup.trusted.test"), 409, "an active envoy with this hostname already exists"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := in.Register(t, c.req)
			msg := servertest.ErrorOf(body)
			if code != c.code || !strings.Contains(msg, c.want) {
				t.Fatalf("HTTP %d %q, want %d containing %q", code, msg, c.code, c.want)
			}
		})
	}
	// Force replaces: the old envoy is revoked as replaced.
	req := good("dup.trusted.test")
	req.Force = true
	code, body := in.Register(t, req)
	if code != 200 {
		t.Fatalf("force: %d %s", code, body)
	}
	r := decode[apiv1.RegisterResponse](t, body)
	if len(r.Replaced) != 1 {
		t.Fatalf("force replaced %v", r.Replaced)
	}
	old, err := in.Store().GetEnvoy(t.Context(), r.Replaced[0])
	if err != nil || old.Status != "revoked" || old.RevokedReason != "replaced" || old.ReplacedBy != r.UUID {
		t.Fatalf("replaced envoy: %+v %v", old, err)
	}
	// Malformed JSON and unknown fields are 400 with a JSON error.
	for _, raw := range []string{"{", `{"hostname": 3}`, `{"hostnam": "x"}`} {
		resp, err := in.Client.Post(in.URL+"/api/v1/bootstrap/register", "application/json", strings.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		var e apiv1.Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 400 || e.Error == "" {
			t.Errorf("%s: HTTP %d %q", raw, resp.StatusCode, e.Error)
		}
	}
	// Every attempt is audited, denied ones too, never with a secret.
	code, body = in.Do(t, "GET", "/api/v1/audit?since=1h&limit=0", nil, true)
	if code != 200 {
		t.Fatalf("audit: %d", code)
	}
	evs := decode[[]apiv1.AuditEvent](t, body)
	denied := 0
	for _, e := range evs {
		if e.Type == "registration" && e.Result == "denied" {
			denied++
		}
	}
	if denied < 9 {
		t.Fatalf("%d denied registrations audited, want at least 9", denied)
	}
	for _, tk := range []apiv1.TokenCreated{used, revoked, expired, another} {
		if strings.Contains(string(body), tk.Token) {
			t.Fatal("the audit log contains a token secret")
		}
	}
}

func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	pol := `package policy
trusted_enrollment: [{name: "lab", pattern: "*.lab.test", cidrs: ["192.0.2.0/24"]}]
approved: []
`
	untrusted := servertest.Start(t, servertest.Options{Policy: pol})
	req := servertest.NewIdentity(t, "a.lab.test").Req
	post := func(in *servertest.Instance, req apiv1.RegisterRequest) (int, string) {
		b, _ := json.Marshal(req)
		hr, _ := http.NewRequest("POST", in.URL+"/api/v1/bootstrap/register", strings.NewReader(string(b)))
		hr.Header.Set("Content-Type", "application/json")
		hr.Header.Set("X-Forwarded-For", "192.0.2.7")
		resp, err := in.Client.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e apiv1.Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error
	}
	if code, msg := post(untrusted, req); code != 403 {
		t.Fatalf("X-Forwarded-For from an untrusted peer was honoured: HTTP %d %s", code, msg)
	}
	trusted := servertest.Start(t, servertest.Options{Policy: pol, Config: func(c *server.Config) {
		c.Server.TrustedProxies = []string{"127.0.0.1"}
	}})
	if code, msg := post(trusted, req); code != 200 {
		t.Fatalf("X-Forwarded-For from a trusted proxy: HTTP %d %s", code, msg)
	}
}

func TestAdminRoutesNeedToken(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	for _, r := range []struct{ method, path string }{
		{"GET", "/api/v1/tokens"}, {"POST", "/api/v1/tokens"}, {"DELETE", "/api/v1/tokens/aaaaaaaaaa"},
		{"GET", "/api/v1/envoys"}, {"GET", "/api/v1/envoys/x"}, {"GET", "/api/v1/audit"},
		{"GET", "/api/v1/policy/status"}, {"POST", "/api/v1/policy/sync"}, {"GET", "/api/v1/nothing"},
	} {
		code, body := in.Do(t, r.method, r.path, nil, false)
		if code != 401 || servertest.ErrorOf(body) == "" {
			t.Errorf("%s %s without a token: HTTP %d %s", r.method, r.path, code, body)
		}
	}
	in.AdminToken = "va_wrong"
	if code, _ := in.Do(t, "GET", "/api/v1/tokens", nil, true); code != 401 {
		t.Errorf("wrong admin token: HTTP %d", code)
	}
	if code, body := in.Do(t, "GET", "/api/v1/agent/self", nil, false); code != 401 || !strings.Contains(servertest.ErrorOf(body), "client certificate") {
		t.Errorf("agent/self without a client certificate: HTTP %d %s", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := in.Do(t, "GET", p, nil, false); code != 200 {
			t.Errorf("%s: HTTP %d", p, code)
		}
	}
	// Metrics on the public port need an admin token (server.metrics_listen
	// serves them without one).
	if code, _ := in.Do(t, "GET", "/metrics", nil, false); code != 401 {
		t.Errorf("/metrics without a token: HTTP %d, want 401", code)
	}
}

func TestRateLimit(t *testing.T) {
	in := servertest.Start(t, servertest.Options{Config: func(c *server.Config) {
		c.Bootstrap.RateLimit.PerSecond = 0.001
		c.Bootstrap.RateLimit.Burst = 3
	}})
	req := servertest.NewIdentity(t, "nobody.example.org").Req
	for i := 0; i < 3; i++ {
		if code, _ := in.Register(t, req); code != 403 {
			t.Fatalf("request %d: HTTP %d, want 403", i, code)
		}
	}
	b, _ := json.Marshal(req)
	resp, err := in.Client.Post(in.URL+"/api/v1/bootstrap/register", "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the limit: HTTP %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Admin routes are not limited by it.
	if code, _ := in.Do(t, "GET", "/api/v1/tokens", nil, true); code != 200 {
		t.Fatalf("admin route limited: %d", code)
	}
}

func TestRestartKeepsState(t *testing.T) {
	data := t.TempDir()
	in := servertest.Start(t, servertest.Options{DataDir: data})
	fp := in.CA().Fingerprint()
	admin := in.AdminToken
	tok := in.Token(t, "keep.example.com", "")
	if c, b := in.Register(t, servertest.NewIdentity(t, "keep.trusted.test").Req); c != 200 {
		t.Fatalf("register: %d %s", c, b)
	}
	in.Stop()
	st, err := os.Stat(in.AdminTokenFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", st, err)
	}

	in2 := servertest.Start(t, servertest.Options{DataDir: data})
	if in2.CA().Fingerprint() != fp || in2.AdminToken != admin {
		t.Fatal("CA or admin token changed across a restart")
	}
	code, body := in2.Do(t, "GET", "/api/v1/envoys/keep.trusted.test", nil, true)
	if code != 200 {
		t.Fatalf("envoy lost across restart: %d %s", code, body)
	}
	code, body = in2.Do(t, "GET", "/api/v1/tokens", nil, true)
	if ts := decode[[]apiv1.Token](t, body); code != 200 || len(ts) != 1 || ts[0].ID != tok.ID {
		t.Fatalf("tokens after restart: %d %s", code, body)
	}
	code, body = in2.Do(t, "GET", "/api/v1/audit?since=1h", nil, true)
	if evs := decode[[]apiv1.AuditEvent](t, body); code != 200 || len(evs) < 2 {
		t.Fatalf("audit after restart: %d %s", code, body)
	}
}

func TestRebootstrapProvenByOldKey(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	tok := in.Token(t, "rb.example.com", "")
	old := servertest.NewIdentity(t, "rb.example.com")
	old.Req.Token = tok.Token
	code, body := in.Register(t, old.Req)
	if code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	first := decode[apiv1.RegisterResponse](t, body)

	next := func(signer ed25519.PrivateKey) apiv1.RegisterRequest {
		r := servertest.NewIdentity(t, "rb.example.com").Req
		r.PreviousUUID = first.UUID
		r.PreviousSignature = base64.StdEncoding.EncodeToString(ed25519.Sign(signer, apiv1.RebootstrapSigningBytes(first.UUID, r.Hostname, r.PublicKey)))
		return r
	}
	// Not asked to rebootstrap: refused, even with the right key.
	if code, body := in.Register(t, next(old.Key)); code != 403 || !strings.Contains(servertest.ErrorOf(body), "was not asked to rebootstrap") {
		t.Fatalf("unrequested rebootstrap: %d %s", code, body)
	}
	if code, body := in.Do(t, "POST", "/api/v1/envoys/"+first.UUID+"/rebootstrap", nil, true); code != 200 || !decode[apiv1.Envoy](t, body).Rebootstrap {
		t.Fatalf("request rebootstrap: %d %s", code, body)
	}
	// Signed by another key: refused.
	other := servertest.NewIdentity(t, "rb.example.com")
	if code, body := in.Register(t, next(other.Key)); code != 403 || !strings.Contains(servertest.ErrorOf(body), "does not verify") {
		t.Fatalf("rebootstrap signed by another key: %d %s", code, body)
	}
	code, body = in.Register(t, next(old.Key))
	if code != 200 {
		t.Fatalf("rebootstrap: %d %s", code, body)
	}
	second := decode[apiv1.RegisterResponse](t, body)
	if second.UUID == first.UUID || second.Method != "rebootstrap" || len(second.Replaced) != 1 || second.Replaced[0] != first.UUID {
		t.Fatalf("rebootstrap answer: %+v", second)
	}
	e, err := in.Store().GetEnvoy(t.Context(), first.UUID)
	if err != nil || e.Status != "revoked" || e.RevokedReason != "rebootstrapped" || e.ReplacedBy != second.UUID {
		t.Fatalf("old envoy: %+v %v", e, err)
	}
	// The old identity cannot do it again.
	if code, body := in.Register(t, next(old.Key)); code != 403 || !strings.Contains(servertest.ErrorOf(body), "is revoked") {
		t.Fatalf("second rebootstrap with the revoked identity: %d %s", code, body)
	}
}

// TestReadyWithoutPolicySource: a server with no policy source (token
// enrollment only, the container image's default) is ready: /readyz is
// its container HEALTHCHECK, and nothing it is configured for is missing.
func TestReadyWithoutPolicySource(t *testing.T) {
	in := servertest.Start(t, servertest.Options{Config: func(c *server.Config) { c.Policy.Dir = "" }})
	if code, body := in.Do(t, "GET", "/readyz", nil, false); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
}

// TestStartupErrorIsAnError: a server that cannot start (here: its data
// folder cannot be created) returns the error; it used to panic in the
// clean-up of what New had opened (the named result was already nil).
func TestStartupErrorIsAnError(t *testing.T) {
	cfg := &server.Config{}
	cfg.Server.DataDir = "/proc/vigo-cannot-exist"
	cfg.Server.APIListen, cfg.Server.GRPCListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Defaults()
	srv, err := server.New(context.Background(), cfg, nil)
	if err == nil || srv != nil {
		t.Fatalf("New = %v, %v; want an error", srv, err)
	}
}
