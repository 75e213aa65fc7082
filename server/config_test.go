package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := LoadConfig("../examples/server.yaml")
	if err != nil {
		t.Fatalf("examples/server.yaml: %v", err)
	}
	if c.Server.APIListen != ":8443" || c.Server.GRPCListen != ":1530" || c.Policy.Dir != "examples/policy" || c.Database.Driver != "sqlite" {
		t.Fatalf("unexpected example config: %+v", c)
	}
	if got := c.Policy.EvalLimits.Limits().String(); got != "256 MiB, 10s" {
		t.Errorf("example eval_limits = %s, want the defaults written out", got)
	}
}

func TestDefaultsWithoutFile(t *testing.T) {
	c, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.DataDir != "./vigo-data" || time.Duration(c.Bootstrap.CheckinInterval) != time.Minute || c.Bootstrap.RateLimit.PerSecond != 5 {
		t.Fatalf("defaults: %+v", c)
	}
	want := RateLimit{PerSecond: 5, Burst: 20, NetworkPerSecond: 20, NetworkBurst: 80, TokenChecksPerSecond: 10, TokenChecksBurst: 20}
	if c.Bootstrap.RateLimit != want {
		t.Fatalf("rate limit defaults %+v, want %+v", c.Bootstrap.RateLimit, want)
	}
	// The example documents the defaults.
	ex, err := LoadConfig("../examples/server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if ex.Bootstrap.RateLimit != want {
		t.Fatalf("examples/server.yaml rate_limit %+v, want the defaults %+v", ex.Bootstrap.RateLimit, want)
	}
	wantCheckin := Limit{PerSecond: 1, Burst: 20}
	if c.Bootstrap.CheckinRateLimit != wantCheckin || ex.Bootstrap.CheckinRateLimit != wantCheckin {
		t.Fatalf("checkin_rate_limit: default %+v, example %+v, want %+v", c.Bootstrap.CheckinRateLimit, ex.Bootstrap.CheckinRateLimit, wantCheckin)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown key", "server:\n  api_listen: :1\n  grpc_lisen: :2\n", "line 3: unknown key server.grpc_lisen"},
		{"unknown nested key", "policy:\n  git:\n    url: x\n    auth:\n      tokn_file: y\n", "unknown key policy.git.auth.tokn_file"},
		{"legacy trusted_enrollment", "bootstrap:\n  trusted_enrollment: []\n", "bootstrap.trusted_enrollment is no longer a server setting: it now lives in the policy repository"},
		{"legacy cert_validity", "bootstrap:\n  cert_validity: 8760h\n", "bootstrap.cert_validity is no longer a server setting"},
		{"bad duration", "bootstrap:\n  checkin_interval: soon\n", `"soon" is not a duration`},
		{"both policy sources", "policy:\n  dir: p\n  git: {url: x}\n", "exactly one of policy.dir and policy.git"},
		{"bad driver", "database:\n  driver: mysql\n", `database.driver "mysql": must be sqlite or postgres`},
		{"bad key exchange", "server:\n  tls:\n    key_exchange: rsa\n", `server.tls.key_exchange "rsa": must be hybrid (the default, post-quantum) or x25519`},
		{"postgres without dsn", "database:\n  driver: postgres\n", "set database.dsn or database.dsn_file"},
		{"bad proxy", "server:\n  trusted_proxies: [nope]\n", `"nope" is neither an address nor a CIDR`},
		{"not yaml", "server: [\n", "parse YAML"},
		{"bad eval memory", "policy:\n  eval_limits:\n    memory: lots\n", `line 3: "lots" is not a size`},
		{"eval memory too small", "policy:\n  eval_limits:\n    memory: 1MiB\n", "policy.eval_limits: memory limit 1 MiB is below the minimum of 32 MiB"},
		{"negative eval timeout", "policy:\n  eval_limits:\n    timeout: -1s\n", "policy.eval_limits.timeout must not be negative"},
		{"own HTTPS certificate without its key", "server:\n  tls:\n    cert_file: /etc/le/fullchain.pem\n", "needs both cert_file and key_file"},
		{"network burst", "bootstrap:\n  rate_limit: {network_per_second: 3, network_burst: -1}\n", "bootstrap.rate_limit.network_burst must be at least 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "server.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadConfig = %v, want an error containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
}

// TestHTTPSCertPaths: only a certificate elsewhere than where the CA's own
// goes (tls/cert, tls/key under data_dir) is the operator's.
func TestHTTPSCertPaths(t *testing.T) {
	for _, tc := range []struct {
		name, cert, key, wantCert, wantKey string
	}{
		{name: "unset"},
		{name: "the defaults written out", cert: "tls/cert", key: "tls/key"},
		{name: "the defaults, absolute", cert: "/data/tls/cert", key: "/data/tls/key"},
		{name: "the operator's", cert: "/etc/le/fullchain.pem", key: "/etc/le/privkey.pem", wantCert: "/etc/le/fullchain.pem", wantKey: "/etc/le/privkey.pem"},
		{name: "relative to data_dir", cert: "own/cert.pem", key: "own/key.pem", wantCert: "/data/own/cert.pem", wantKey: "/data/own/key.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{}
			c.Server.DataDir = "/data"
			c.Server.TLS.CertFile, c.Server.TLS.KeyFile = tc.cert, tc.key
			cert, key := c.HTTPSCertPaths()
			if cert != tc.wantCert || key != tc.wantKey {
				t.Errorf("HTTPSCertPaths = %q, %q; want %q, %q", cert, key, tc.wantCert, tc.wantKey)
			}
		})
	}
}
