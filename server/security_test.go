package server_test

// Regression tests of the security review (issue 12), one per item, each
// named after its item. README.md ("Security model") names them.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// postRaw sends body (a value to encode as JSON, or raw []byte) with the
// given headers and returns the status, the headers and the body.
func postRaw(t *testing.T, in *servertest.Instance, path string, body any, header map[string]string) (int, http.Header, []byte) {
	t.Helper()
	raw, ok := body.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest("POST", in.URL+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := in.Client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

// TestForwardedForFailsClosed (issue 12, item 2): behind a trusted proxy,
// a client hop that is not a bare address is parsed when it is ip:port or
// [ip]:port and otherwise means "no source address": it never makes the
// server use the proxy's own address, which here lies in a trusted CIDR.
func TestForwardedForFailsClosed(t *testing.T) {
	pol := `package policy
trusted_enrollment: [
	{name: "proxy-net", pattern: "*.lab.test", cidrs: ["127.0.0.0/8"]},
	{name: "client-net", pattern: "*.net.test", cidrs: ["192.0.2.0/24", "2001:db8::/64"]},
]
approved: []
`
	in := servertest.Start(t, servertest.Options{Policy: pol, Config: func(c *server.Config) {
		c.Server.TrustedProxies = []string{"127.0.0.1"}
	}})
	tests := []struct {
		name, host, xff string
		code            int
		source          string // the envoy's recorded source address when enrolled
	}{
		{"ip:port is the client, not the proxy", "a.lab.test", "203.0.113.9:5555", 403, ""},
		{"[v6]:port is the client, not the proxy", "b.lab.test", "[2001:db8:1::9]:5555", 403, ""},
		{"unknown is no source", "c.lab.test", "unknown", 403, ""},
		{"obfuscated is no source", "d.lab.test", "_hidden", 403, ""},
		{"garbage right of a good hop", "e.lab.test", "192.0.2.7, 192.0.2.8:x", 403, ""},
		{"zone is no source", "f.lab.test", "fe80::1%eth0", 403, ""},
		{"ip:port parsed", "a.net.test", "198.51.100.1, 192.0.2.7:5555", 200, "192.0.2.7"},
		{"[v6]:port parsed", "b.net.test", "[2001:db8::9]:443", 200, "2001:db8::9"},
		{"bare v4-mapped", "c.net.test", "::ffff:192.0.2.9", 200, "192.0.2.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := postRaw(t, in, "/api/v1/bootstrap/register", servertest.NewIdentity(t, tt.host).Req,
				map[string]string{"X-Forwarded-For": tt.xff})
			if code != tt.code {
				var r apiv1.RegisterResponse
				_ = json.Unmarshal(body, &r)
				t.Fatalf("X-Forwarded-For %q: HTTP %d %s%s, want %d", tt.xff, code, servertest.ErrorOf(body), r.Rule, tt.code)
			}
			if code != 200 {
				return
			}
			var r apiv1.RegisterResponse
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			e, err := in.Store().GetEnvoy(t.Context(), r.UUID)
			if err != nil || e.SourceIP != tt.source {
				t.Fatalf("recorded source %q (%v), want %q", e.SourceIP, err, tt.source)
			}
		})
	}
}

// TestJSONOnly (issue 12, item 5): the open POST endpoint accepts only
// application/json, so that a cross-site "simple" form post from a browser
// inside a trusted network cannot register (or force-replace) a host.
// Refused requests have no side effect.
func TestJSONOnly(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	tests := []struct {
		name, host, ctype string
		code              int
	}{
		{"text/plain", "a.trusted.test", "text/plain", 415},
		{"form", "b.trusted.test", "application/x-www-form-urlencoded", 415},
		{"multipart", "c.trusted.test", "multipart/form-data; boundary=x", 415},
		{"none", "d.trusted.test", "", 415},
		{"json suffix", "e.trusted.test", "application/vnd.evil+json", 415},
		{"unparsable", "f.trusted.test", "application/json; =", 415},
		{"json", "g.trusted.test", "application/json", 200},
		{"json with charset", "h.trusted.test", "application/json; charset=utf-8", 200},
		{"json upper case", "i.trusted.test", "Application/JSON", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, h, body := postRaw(t, in, "/api/v1/bootstrap/register", servertest.NewIdentity(t, tt.host).Req,
				map[string]string{"Content-Type": tt.ctype, "Origin": "https://evil.example"})
			if code != tt.code {
				t.Fatalf("Content-Type %q: HTTP %d %s, want %d", tt.ctype, code, servertest.ErrorOf(body), tt.code)
			}
			if code == 200 {
				return
			}
			if ct := h.Get("Content-Type"); ct != "application/json" || servertest.ErrorOf(body) == "" {
				t.Errorf("refusal is not a JSON error: %s %q", ct, body)
			}
			if _, err := in.Store().GetActiveEnvoyByHostname(t.Context(), tt.host); err == nil {
				t.Errorf("Content-Type %q: %s was enrolled", tt.ctype, tt.host)
			}
		})
	}
}

// TestBoundedInput (issue 12, item 4): every string field of a
// registration, and everything else an anonymous caller sends to the open
// routes, is bounded: an oversized value is refused with a short message
// that does not repeat it, and neither the audit trail nor the log grows
// with it.
func TestBoundedInput(t *testing.T) {
	var log servertest.SyncBuffer
	in := servertest.Start(t, servertest.Options{Log: &log})
	big := strings.Repeat("Z", 60000)
	good := func(h string) apiv1.RegisterRequest { return servertest.NewIdentity(t, h).Req }
	with := func(h string, edit func(*apiv1.RegisterRequest)) apiv1.RegisterRequest {
		r := good(h)
		edit(&r)
		return r
	}
	longCN := servertest.NewIdentity(t, "cn.trusted.test")
	longCN.Req = servertest.RequestFor(t, "cn.trusted.test", longCN.Key.Public().(ed25519.PublicKey), longCN.Key, strings.Repeat("\x1b[31m", 400))

	const limit = 300   // bytes of an error message, an audit field, a log value
	echoed := big[:101] // a quote of the input longer than messages may quote
	tests := []struct {
		name string
		path string
		body any // nil: GET
		code int
	}{
		{"previous_uuid", "/api/v1/bootstrap/register", with("a.approved.test", func(r *apiv1.RegisterRequest) { r.PreviousUUID = big }), 400},
		{"previous_uuid not a uuid", "/api/v1/bootstrap/register", with("a.approved.test", func(r *apiv1.RegisterRequest) { r.PreviousUUID = "x\x1b[31m" }), 400},
		{"previous_signature", "/api/v1/bootstrap/register", with("a.approved.test", func(r *apiv1.RegisterRequest) {
			r.PreviousUUID, r.PreviousSignature = "1b4e28ba-2fa1-41d2-883f-0016d3cca427", big
		}), 400},
		{"hostname", "/api/v1/bootstrap/register", with("a.approved.test", func(r *apiv1.RegisterRequest) { r.Hostname = big }), 400},
		{"os", "/api/v1/bootstrap/register", with("a.approved.test", func(r *apiv1.RegisterRequest) { r.OS = big }), 400},
		{"arch", "/api/v1/bootstrap/register", with("a.approved.test", func(r *apiv1.RegisterRequest) { r.Arch = big }), 400},
		{"public_key", "/api/v1/bootstrap/register", with("a.approved.test", func(r *apiv1.RegisterRequest) { r.PublicKey = big }), 400},
		{"csr", "/api/v1/bootstrap/register", with("a.approved.test", func(r *apiv1.RegisterRequest) { r.CSR = big }), 400},
		{"token", "/api/v1/bootstrap/register", with("a.example.org", func(r *apiv1.RegisterRequest) { r.Token = big }), 400},
		{"csr common name", "/api/v1/bootstrap/register", longCN.Req, 400},
		{"unknown field", "/api/v1/bootstrap/register", []byte(`{"` + big + `": 1}`), 400},
		{"bootstrap os", "/bootstrap?os=" + big, nil, 400},
		{"no route", "/" + big, nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var code int
			var body []byte
			if tt.body == nil {
				code, body = in.Do(t, "GET", tt.path, nil, false)
			} else {
				code, _, body = postRaw(t, in, tt.path, tt.body, nil)
			}
			msg := servertest.ErrorOf(body)
			if code != tt.code || msg == "" || len(body) > limit || strings.Contains(msg, echoed) || strings.Contains(msg, "\x1b") {
				t.Errorf("HTTP %d, %d bytes: %.200q; want %d, a short message that does not repeat the input", code, len(body), msg, tt.code)
			}
		})
	}
	// A well-formed but unknown previous_uuid is refused by name, bounded.
	code, _, body := postRaw(t, in, "/api/v1/bootstrap/register", with("a.approved.test", func(r *apiv1.RegisterRequest) {
		r.PreviousUUID, r.PreviousSignature = "1B4E28BA-2FA1-41D2-883F-0016D3CCA427", base64.StdEncoding.EncodeToString(make([]byte, 64))
	}), nil)
	if msg := servertest.ErrorOf(body); code != 403 || msg != "rebootstrap refused: no envoy 1b4e28ba-2fa1-41d2-883f-0016d3cca427" {
		t.Errorf("unknown previous_uuid: HTTP %d %q", code, msg)
	}

	evs, err := in.Store().ListAudit(t.Context(), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		fields := []string{e.Hostname, e.Reason, e.Rule, e.Method, e.TokenID, e.SourceIP, e.EnvoyUUID}
		for _, v := range e.Details {
			fields = append(fields, v)
		}
		for _, f := range fields {
			if len(f) > limit || strings.Contains(f, "\x1b") {
				t.Errorf("audit event %d (%s %s) holds %d bytes: %.100q", e.ID, e.Type, e.Result, len(f), f)
			}
		}
	}
	for line := range strings.SplitSeq(log.String(), "\n") {
		if len(line) > 4*limit || strings.Contains(line, echoed) {
			t.Errorf("log line of %d bytes: %.200s", len(line), line)
		}
	}
}

// tokenCheckLines returns the vigo_token_checks_total samples of /metrics.
func tokenCheckLines(t *testing.T, in *servertest.Instance) map[string]string {
	t.Helper()
	code, body := in.Do(t, "GET", "/metrics", nil, true) // an administrator reads them; anonymous callers cannot
	if code != 200 {
		t.Fatalf("/metrics: HTTP %d", code)
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if name, value, ok := strings.Cut(line, " "); ok && strings.HasPrefix(name, "vigo_token_checks_total") {
			out[name] = value
		}
	}
	return out
}

// TestMetricsAndTimingRevealNoTokens (issue 12, item 7): an anonymous
// caller cannot tell a known token id from an unknown one: the answers are
// the same, and /metrics (for administrators on the public port) counts both
// alike. (That both cost one bcrypt comparison is
// TestUnknownTokenCostsABcrypt in server/enroll.)
func TestMetricsAndTimingRevealNoTokens(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	known := in.Token(t, "web1.example.com", "")
	wrongSecret := known.Token[:len(known.Token)-32] + strings.Repeat("a", 32)
	unknown := "vt_zzzzzzzzzz." + strings.Repeat("a", 32)
	if strings.HasPrefix(known.Token, "vt_zzzzzzzzzz.") {
		t.Skip("the generated token has the unknown id")
	}
	try := func(tok string) (int, string, map[string]string) {
		before := tokenCheckLines(t, in)
		req := servertest.NewIdentity(t, "web1.example.com").Req
		req.Token = tok
		code, body := in.Register(t, req)
		after := tokenCheckLines(t, in)
		delta := map[string]string{}
		for k, v := range after {
			if before[k] != v {
				delta[k] = before[k] + " -> " + v
			}
		}
		return code, string(body), delta
	}
	c1, b1, d1 := try(wrongSecret)
	c2, b2, d2 := try(unknown)
	if c1 != 403 || c1 != c2 || b1 != b2 {
		t.Errorf("known id, wrong secret: HTTP %d %s\nunknown id: HTTP %d %s\nwant the same 403", c1, b1, c2, b2)
	}
	// The same series moved by one for both.
	strip := func(d map[string]string) []string {
		var names []string
		for k := range d {
			names = append(names, k)
		}
		return names
	}
	if n1, n2 := strip(d1), strip(d2); len(n1) != 1 || !cmp.Equal(n1, n2) {
		t.Errorf("/metrics changed differently:\nknown id, wrong secret: %v\nunknown id: %v", d1, d2)
	}
}

// TestMetricsListen (issue 12, item 7): with server.metrics_listen the
// metrics move to their own plain-HTTP listener, the Prometheus
// convention, and the public port serves none.
func TestMetricsListen(t *testing.T) {
	in := servertest.Start(t, servertest.Options{Config: func(c *server.Config) {
		c.Server.MetricsListen = "127.0.0.1:0"
	}})
	if code, body := in.Do(t, "GET", "/metrics", nil, false); code != 404 || !strings.Contains(servertest.ErrorOf(body), "server.metrics_listen") {
		t.Errorf("public /metrics: HTTP %d %.200s, want 404", code, body)
	}
	for path, want := range map[string]string{"/metrics": "vigo_grpc_connections", "/healthz": `"ok"`, "/readyz": `"ready"`, "/api/v1/tokens": "no route"} {
		resp, err := http.Get("http://" + in.MetricsAddr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantCode := 200
		if path == "/api/v1/tokens" {
			wantCode = 404
		}
		if resp.StatusCode != wantCode || !strings.Contains(string(body), want) {
			t.Errorf("metrics listener %s: HTTP %d %.200s, want %d with %q", path, resp.StatusCode, body, wantCode, want)
		}
	}
}

// clientFrom returns an HTTPS client of in whose connections come from the
// local address src (any 127.0.0.0/8 address works on loopback).
func clientFrom(in *servertest.Instance, src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	tr := in.Client.Transport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	tr.DisableKeepAlives = true
	return &http.Client{Transport: tr, Timeout: in.Client.Timeout}
}

// TestRateLimitAgainstAddressRotation (issue 12, item 8): the open
// endpoints are limited per address and also per IPv4 /24 and IPv6 /64,
// so rotating addresses within a network does not escape the limit; and
// registrations with a token (the bcrypt path) have a ceiling for the
// whole server. Every refusal is 429 with Retry-After.
func TestRateLimitAgainstAddressRotation(t *testing.T) {
	in := servertest.Start(t, servertest.Options{Config: func(c *server.Config) {
		c.Server.TrustedProxies = []string{"127.0.0.1"}
		c.Bootstrap.RateLimit = server.RateLimit{
			PerSecond: 0.001, Burst: 3, // per address: plenty for one request each
			NetworkPerSecond: 0.001, NetworkBurst: 10,
			TokenChecksPerSecond: 0.001, TokenChecksBurst: 5,
		}
	}})
	register := func(c *http.Client, header map[string]string, tok string) (int, string) {
		req := servertest.NewIdentity(t, "nobody.example.org").Req
		req.Token = tok
		b, _ := json.Marshal(req)
		hr, _ := http.NewRequest("POST", in.URL+"/api/v1/bootstrap/register", bytes.NewReader(b))
		hr.Header.Set("Content-Type", "application/json")
		for k, v := range header {
			hr.Header.Set(k, v)
		}
		resp, err := c.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == 429 && (resp.Header.Get("Retry-After") == "" || servertest.ErrorOf(body) == "") {
			t.Errorf("429 without Retry-After or JSON error: %q %s", resp.Header.Get("Retry-After"), body)
		}
		return resp.StatusCode, servertest.ErrorOf(body)
	}
	count := func(codes []int) (passed, limited int) {
		for _, c := range codes {
			if c == 429 {
				limited++
			} else {
				passed++
			}
		}
		return passed, limited
	}

	t.Run("IPv4 /24", func(t *testing.T) {
		var codes []int
		for i := range 20 {
			code, _ := register(clientFrom(in, fmt.Sprintf("127.0.7.%d", 10+i)), nil, "")
			codes = append(codes, code)
		}
		if p, l := count(codes); p != 10 || l != 10 {
			t.Errorf("20 addresses of one /24: %d passed, %d limited (%v); want 10 and 10", p, l, codes)
		}
		// Another /24 is not affected.
		if code, msg := register(clientFrom(in, "127.0.8.10"), nil, ""); code != 403 {
			t.Errorf("another /24: HTTP %d %s, want 403", code, msg)
		}
	})
	t.Run("IPv6 /64 behind a proxy", func(t *testing.T) {
		var codes []int
		for i := range 20 {
			code, _ := register(in.Client, map[string]string{"X-Forwarded-For": fmt.Sprintf("2001:db8:1:2:%x::1", i+1)}, "")
			codes = append(codes, code)
		}
		if p, l := count(codes); p != 10 || l != 10 {
			t.Errorf("20 addresses of one /64: %d passed, %d limited (%v); want 10 and 10", p, l, codes)
		}
	})
	t.Run("bcrypt ceiling", func(t *testing.T) {
		fake := "vt_aaaaaaaaaa." + strings.Repeat("b", 32)
		var codes []int
		for i := range 8 {
			code, _ := register(clientFrom(in, fmt.Sprintf("127.0.%d.1", 20+i)), nil, fake)
			codes = append(codes, code)
		}
		if p, l := count(codes); p != 5 || l != 3 {
			t.Errorf("8 token registrations from 8 networks: %d passed, %d limited (%v); want 5 and 3", p, l, codes)
		}
		// Registrations without a token do not pay for it.
		if code, msg := register(clientFrom(in, "127.0.40.1"), nil, ""); code != 403 {
			t.Errorf("no token, past the token ceiling: HTTP %d %s, want 403", code, msg)
		}
	})
}
