package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// TestBackupCommandWhileServing (issue 16, item 5): `vigosrv backup` run
// as its own process while a server runs, then `vigosrv restore` into a
// new data folder, which a new server starts on with the same state.
func TestBackupCommandWhileServing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin := buildServer(t)
	dir := t.TempDir()
	config := loopbackConfig(t, filepath.Join(dir, "server.yaml"), filepath.Join(dir, "data"))
	p := startProc(t, bin, config)
	admin, err := os.ReadFile(filepath.Join(dir, "data", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	p.admin = strings.TrimSpace(string(admin))
	for i := range 3 {
		if code, body, err := p.do(t, "POST", "/api/v1/tokens", apiv1.TokenCreateRequest{Pattern: fmt.Sprintf("b%d.example.com", i)}); err != nil || code != 201 {
			t.Fatalf("create token: %d %s %v", code, body, err)
		}
	}
	vigosrv := func(args ...string) (string, int) {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	if out, code := vigosrv("backup", "--config", config); code != 2 || !strings.Contains(out, "--to is required") {
		t.Errorf("backup without --to: exit %d, %s", code, out)
	}
	archive := filepath.Join(dir, "vigo-backup.tar.gz")
	if out, code := vigosrv("backup", "--config", config, "--to", archive); code != 0 || !strings.Contains(out, "SQLite snapshot") {
		t.Fatalf("backup: exit %d, %s", code, out)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v %v, want mode 0600", fi, err)
	}
	restored := filepath.Join(dir, "restored")
	if out, code := vigosrv("restore", "--from", archive, "--data-dir", restored); code != 0 || !strings.Contains(out, "restored 6 files") {
		t.Fatalf("restore: exit %d, %s", code, out)
	}
	if out, code := vigosrv("restore", "--from", archive, "--data-dir", restored); code != 1 || !strings.Contains(out, "exists") {
		t.Errorf("restore over a state: exit %d, %s", code, out)
	}
	config2 := loopbackConfig(t, filepath.Join(dir, "restored.yaml"), restored)
	p2 := startProc(t, bin, config2)
	p2.admin = p.admin // the restored admin token
	code, body, err := p2.do(t, "GET", "/api/v1/tokens", nil)
	var toks []apiv1.Token
	if err != nil || code != 200 || json.Unmarshal(body, &toks) != nil || len(toks) != 3 {
		t.Fatalf("tokens on the restored server: %d %s %v", code, body, err)
	}
}

// loopbackConfig writes a server.yaml at path: both listeners on
// 127.0.0.1:0, data in data, no policy source.
func loopbackConfig(t *testing.T, path, data string) string {
	t.Helper()
	yaml := fmt.Sprintf("server:\n  api_listen: 127.0.0.1:0\n  grpc_listen: 127.0.0.1:0\n  hostname: 127.0.0.1\n  data_dir: %s\n", data)
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
