package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/server"
)

// TestNewStartupErrors makes server.New fail at each of its later steps:
// it must return the error (to be printed once), never panic, and release
// what it opened (the listeners: a second New on the same ports works).
func TestNewStartupErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	short := write("short-secret", "abcdef\n")
	notKey := write("not-a-key.pem", "hello\n")
	tests := []struct {
		name   string
		modify func(c *server.Config)
		want   string
	}{
		{"short webhook secret", func(c *server.Config) { c.Policy.WebhookSecretFile = short }, "the secret must be at least 16 characters"},
		{"missing webhook secret", func(c *server.Config) { c.Policy.WebhookSecretFile = filepath.Join(dir, "missing") }, "read policy.webhook_secret_file"},
		{"agent signing key not PEM", func(c *server.Config) { c.Agent.SigningKeyFile = notKey }, "not a PEM PUBLIC KEY block"},
		{"missing policy folder", func(c *server.Config) { c.Policy.Dir = filepath.Join(dir, "no-policy") }, "policy.dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := server.LoadConfig("")
			if err != nil {
				t.Fatal(err)
			}
			cfg.Server.DataDir = t.TempDir()
			cfg.Server.APIListen, cfg.Server.GRPCListen = "127.0.0.1:0", "127.0.0.1:0"
			tt.modify(cfg)
			var srv *server.Server
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("server.New panicked: %v", r)
					}
				}()
				srv, err = server.New(context.Background(), cfg, nil)
			}()
			if err == nil {
				srv.Close()
				t.Fatal("server.New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}
