package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/server/servertest"
)

// bare runs vigocli with no connection flag: what a user types after
// login.
func bare(args ...string) cliRun {
	var out, errb bytes.Buffer
	code := run(&globals{stdout: &out, stderr: &errb}, args)
	return cliRun{code, out.String(), errb.String()}
}

// clientHome gives the test an empty home and working folder, and no
// VIGO_* variable.
func clientHome(t *testing.T) (configFile string) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	for _, k := range []string{"VIGO_CONFIG", "VIGO_SERVER", "VIGO_CA_FILE", "VIGO_ADMIN_TOKEN", "VIGO_ADMIN_TOKEN_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Chdir(t.TempDir())
	return filepath.Join(home, ".config", "vigo", "config.yaml")
}

func caFingerprint(t *testing.T, in *servertest.Instance) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(in.DataDir, "tls", "ca"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:])
}

// TestLoginThenNoFlags is the "done when" of issue 17 for a second
// machine account: vigocli login once (host:port, CA fingerprint, token
// file), then envoys list -o wide with no flag at all.
func TestLoginThenNoFlags(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	if c, body := in.Register(t, servertest.NewIdentity(t, "web.approved.test").Req); c != 200 {
		t.Fatalf("register: %d %s", c, body)
	}
	cfgFile := clientHome(t)
	u, _ := url.Parse(in.URL)
	fp := caFingerprint(t, in)

	// Before login: nothing to talk to.
	if r := bare("envoys", "list"); r.code != 2 || !strings.Contains(r.stderr, "vigocli login") {
		t.Fatalf("before login: %+v", r)
	}
	// A wrong fingerprint, or a token the server refuses: nothing saved.
	wrong := strings.Repeat("ab", 32)
	if r := bare("login", "--server", u.Host, "--ca-fingerprint", wrong, "--token-file", in.AdminTokenFile); r.code != 1 || !strings.Contains(r.stderr, "no certificate of the chain the server presents has that fingerprint") {
		t.Errorf("wrong fingerprint: %+v", r)
	}
	badTok := filepath.Join(t.TempDir(), "bad.token")
	os.WriteFile(badTok, []byte("vt_aaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n"), 0o600)
	if r := bare("login", "--server", u.Host, "--ca-fingerprint", fp, "--token-file", badTok); r.code == 0 || !strings.Contains(r.stderr, "HTTP 401") {
		t.Errorf("refused token: %+v", r)
	}
	if _, err := os.Stat(filepath.Dir(cfgFile)); err == nil {
		t.Fatalf("a failed login wrote into %s", filepath.Dir(cfgFile))
	}
	if r := bare("login", "--server", u.Host, "--token-file", in.AdminTokenFile); r.code != 2 || !strings.Contains(r.stderr, "--ca-fingerprint") {
		t.Errorf("no way to trust the server: %+v", r)
	}

	r := bare("login", "--server", u.Host, "--ca-fingerprint", fp, "--token-file", in.AdminTokenFile)
	if r.code != 0 || !strings.Contains(r.stdout, `context "`+u.Hostname()+`" saved in `+cfgFile) {
		t.Fatalf("login: %+v", r)
	}
	for _, f := range []string{cfgFile, filepath.Join(filepath.Dir(cfgFile), u.Hostname(), "admin.token")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode())
		}
	}
	r = bare("envoys", "list", "-o", "wide")
	if r.code != 0 || !strings.Contains(r.stdout, "web.approved.test") || !strings.Contains(r.stdout, "VERSION") {
		t.Fatalf("envoys list -o wide after login: %+v", r)
	}

	// A second context; switching; listing.
	if r = bare("login", "--server", in.URL, "--ca-fingerprint", fp, "--token-file", in.AdminTokenFile, "--context", "second"); r.code != 0 {
		t.Fatalf("login --context second: %+v", r)
	}
	if r = bare("config", "current-context"); r.stdout != "second\n" {
		t.Errorf("current-context: %+v", r)
	}
	if r = bare("config", "use-context", "nope"); r.code != 1 || !strings.Contains(r.stderr, `no context "nope"`) {
		t.Errorf("use-context nope: %+v", r)
	}
	if r = bare("config", "use-context", u.Hostname()); r.code != 0 {
		t.Errorf("use-context: %+v", r)
	}
	r = bare("config", "get-contexts", "-o", "json")
	var got struct {
		Current  string `json:"current_context"`
		Contexts []struct {
			Name, Server string
		} `json:"contexts"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Current != u.Hostname() || len(got.Contexts) != 2 {
		t.Errorf("get-contexts: %v %+v\n%s", err, got, r.stdout)
	}
	if r = bare("envoys", "list", "--context", "second"); r.code != 0 || !strings.Contains(r.stdout, "web.approved.test") {
		t.Errorf("--context second: %+v", r)
	}
	if r = bare("envoys", "list", "--context", "nope"); r.code != 2 || !strings.Contains(r.stderr, `no context "nope"`) {
		t.Errorf("--context nope: %+v", r)
	}

	// Another server, by flag or environment: the context's CA and token
	// are not used for it.
	t.Setenv("VIGO_SERVER", "https://127.0.0.1:1")
	if r = bare("envoys", "list"); r.code != 2 || !strings.Contains(r.stderr, "no admin token") {
		t.Errorf("VIGO_SERVER elsewhere: %+v", r)
	}
	// ... but the environment's token goes with it (env before context).
	t.Setenv("VIGO_SERVER", in.URL)
	t.Setenv("VIGO_ADMIN_TOKEN_FILE", badTok)
	if r = bare("envoys", "list"); r.code != 1 || !strings.Contains(r.stderr, "HTTP 401") {
		t.Errorf("VIGO_ADMIN_TOKEN_FILE over the context: %+v", r)
	}
	// ... and a flag before the environment.
	if r = bare("envoys", "list", "--admin-token-file", in.AdminTokenFile); r.code != 0 {
		t.Errorf("--admin-token-file over VIGO_ADMIN_TOKEN_FILE: %+v", r)
	}
}

// TestLoginOnTheServerHost: beside vigo-data, login needs no flag but the
// server's address (here from VIGO_SERVER: the test server does not
// listen on localhost:8443).
func TestLoginOnTheServerHost(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	cfgFile := clientHome(t)
	if err := os.Symlink(in.DataDir, "vigo-data"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIGO_SERVER", in.URL)
	if r := bare("login", "--context", "local"); r.code != 0 || !strings.Contains(r.stdout, caFingerprint(t, in)) {
		t.Fatalf("login: %+v", r)
	}
	os.Remove("vigo-data")
	os.Unsetenv("VIGO_SERVER")
	if r := bare("policy", "status"); r.code != 0 {
		t.Fatalf("policy status after login (no vigo-data, no VIGO_SERVER): %+v", r)
	}
	data, err := os.ReadFile(cfgFile)
	if err != nil || !strings.Contains(string(data), "current-context: local") || strings.Contains(string(data), in.AdminToken) {
		t.Errorf("config file (never the token itself): %v\n%s", err, data)
	}
}
