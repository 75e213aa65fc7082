package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/server/grpcapi/grpcapitest"
	"github.com/vigo-enroll/vigo/server/store"
)

func vigo(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e, agent.Config{}, false)
	return code, o.String(), e.String()
}

// TestRegister runs `vigo register` against a real HTTPS register endpoint
// and gRPC server on loopback.
func TestRegister(t *testing.T) {
	env := grpcapitest.New(t, grpcapitest.Options{})
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "etc")
	pinnedDir := filepath.Join(t.TempDir(), "etc")
	wrong := strings.Repeat("ab", 32)

	tests := []struct {
		name     string
		args     []string
		code     int
		out, err string
		reached  bool // the request reached the server
	}{
		{"trust on first use", []string{"--hostname", "Reg1.Example.com.", "--config-dir", dir}, 0, "checked in over mTLS", "not verified", true},
		{"hostname taken", []string{"--hostname", "reg1.example.com", "--config-dir", dir}, 1, "", "an active envoy with this hostname already exists; re-run with --force to replace it (the old envoy is revoked) (HTTP 409)", true},
		{"force", []string{"--hostname", "reg1.example.com", "--force", "--config-dir", dir}, 0, "checked in over mTLS", "", true},
		{"wrong fingerprint", []string{"--hostname", "reg2.example.com", "--ca-fingerprint", wrong, "--config-dir", pinnedDir}, 1, "", "no CA matching --ca-fingerprint", false},
		{"bad fingerprint", []string{"--hostname", "reg2.example.com", "--ca-fingerprint", "xyz", "--config-dir", pinnedDir}, 1, "", "64 hex digits", false},
		{"pinned", []string{"--hostname", "reg2.example.com", "--ca-fingerprint", strings.ToUpper(env.CA.Fingerprint()), "--config-dir", pinnedDir}, 0, "checked in over mTLS", "", true},
	}
	var firstUUID string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := env.Registrations.Load()
			code, out, errOut := vigo(t, append([]string{"register", "--server", env.HTTPS.URL}, tt.args...)...)
			if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.err) {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s\nwant %d, stdout containing %q, stderr containing %q", code, out, errOut, tt.code, tt.out, tt.err)
			}
			if reached := env.Registrations.Load() > before; reached != tt.reached {
				t.Errorf("request reached the server: %v, want %v", reached, tt.reached)
			}
			if tt.name == "trust on first use" {
				enr, err := agent.Load(dir)
				if err != nil {
					t.Fatal(err)
				}
				firstUUID = enr.File.UUID
			}
		})
	}

	enr, err := agent.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if enr.File.UUID == firstUUID || enr.File.Hostname != "reg1.example.com" || enr.File.GRPCAddress != env.Addr || enr.File.ServerName != "127.0.0.1" {
		t.Errorf("saved config: %+v (first uuid %s)", enr.File, firstUUID)
	}
	old, err := env.Store.GetEnvoy(ctx, firstUUID)
	if err != nil || old.Status != store.StatusRevoked || old.ReplacedBy != enr.File.UUID {
		t.Errorf("replaced envoy: %+v (err %v)", old, err)
	}
	for name, mode := range map[string]os.FileMode{agent.KeyName: 0o600, agent.CertName: 0o644, agent.CAName: 0o644, agent.ConfigName: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
		} else if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
}
