package server_test

// Regression tests of the security review (issue 12), one per item, each
// named after its item. README.md ("Security model") names them.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

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
