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
		{"postgres without dsn", "database:\n  driver: postgres\n", "set database.dsn or database.dsn_file"},
		{"bad proxy", "server:\n  trusted_proxies: [nope]\n", `"nope" is neither an address nor a CIDR`},
		{"not yaml", "server: [\n", "parse YAML"},
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
