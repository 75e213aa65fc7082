package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// TestIssue12Item6DatabaseFilesPrivate: the SQLite files (vigo.db, -wal,
// -shm) are 0600 and the data folder 0700 even when the folder already
// existed with the usual 0755 (made by a package, by `make run`'s
// mkdir -p vigo-data/dist, by an operator), and a database left 0644 by an
// older version is made private at the next start (security review L5).
func TestIssue12Item6DatabaseFilesPrivate(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix permission bits")
	}
	data := filepath.Join(t.TempDir(), "vigo-data")
	if err := os.MkdirAll(filepath.Join(data, "dist"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		if got := mode(t, data); got != 0o700 {
			t.Errorf("%s: data folder mode %v, want 0700", when, got)
		}
		for _, name := range []string{"vigo.db", "vigo.db-wal", "vigo.db-shm"} {
			if got := mode(t, filepath.Join(data, name)); got != 0o600 {
				t.Errorf("%s: %s mode %v, want 0600", when, name, got)
			}
		}
	}
	in := servertest.Start(t, servertest.Options{DataDir: data})
	if c, b := in.Register(t, servertest.NewIdentity(t, "files.trusted.test").Req); c != 200 {
		t.Fatalf("register: %d %s", c, b)
	}
	check("first start")
	in.Stop()

	// Files left world-readable by an older version.
	for _, name := range []string{"vigo.db", "vigo.db-wal", "vigo.db-shm"} {
		if err := os.Chmod(filepath.Join(data, name), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	in2 := servertest.Start(t, servertest.Options{DataDir: data})
	if c, b := in2.Do(t, "GET", "/api/v1/envoys/files.trusted.test", nil, true); c != 200 {
		t.Fatalf("envoy after restart: %d %s", c, b)
	}
	check("restart")
}

// TestIssue12Item6DataFolderWritableByOthersRefused: a data folder that
// other users can write to is not tightened but refused, with a message
// that says what to do: it may be a shared folder such as /tmp, whose
// mode must not change, and files in it may already have been planted.
func TestIssue12Item6DataFolderWritableByOthersRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix permission bits")
	}
	for _, mode := range []os.FileMode{0o777, 0o770, 0o1777} {
		data := filepath.Join(t.TempDir(), "data")
		if err := os.Mkdir(data, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(data, mode); err != nil {
			t.Fatal(err)
		}
		cfg := &server.Config{}
		cfg.Server.APIListen, cfg.Server.GRPCListen, cfg.Server.Hostname = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
		cfg.Server.DataDir = data
		cfg.Policy.Dir = t.TempDir()
		cfg.Defaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		s, err := server.New(t.Context(), cfg, nil)
		if err == nil {
			s.Close()
			t.Fatalf("mode %v: the server started in a data folder others can write to", mode)
		}
		if !strings.Contains(err.Error(), "writable by other users") || !strings.Contains(err.Error(), data) {
			t.Errorf("mode %v: error %q does not say what is wrong", mode, err)
		}
		fi, _ := os.Stat(data)
		if fi.Mode()&(os.ModePerm|os.ModeSticky) != mode&(os.ModePerm|os.ModeSticky) {
			t.Errorf("mode %v: the refused folder was changed to %v", mode, fi.Mode())
		}
		if entries, _ := os.ReadDir(data); len(entries) != 0 {
			t.Errorf("mode %v: files written before the refusal: %v", mode, entries)
		}
	}
}

// TestIssue12Item6TLS12OnlyAEADSuites: with TLS 1.2 the HTTPS listener
// negotiates only ECDHE key exchange with an AEAD cipher (forward secrecy,
// no CBC-SHA1); a client offering only ECDHE-ECDSA-AES128-SHA (security
// review L6) is refused at the handshake. TLS 1.3 is unchanged.
func TestIssue12Item6TLS12OnlyAEADSuites(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	addr := strings.TrimPrefix(in.URL, "https://")
	handshake := func(conf *tls.Config) (tls.ConnectionState, error) {
		conf.InsecureSkipVerify = true // the handshake is what is tested
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 30 * time.Second}, Config: conf}
		c, err := d.DialContext(t.Context(), "tcp", addr)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.(*tls.Conn).ConnectionState(), nil
	}
	// The server certificate is ECDSA: these are all the TLS 1.2 suites
	// Go knows with an ECDSA or no signature.
	tests := []struct {
		name   string
		suite  uint16
		accept bool
	}{
		{"ECDHE-ECDSA-AES128-GCM-SHA256", tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true},
		{"ECDHE-ECDSA-AES256-GCM-SHA384", tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true},
		{"ECDHE-ECDSA-CHACHA20-POLY1305", tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true},
		{"ECDHE-ECDSA-AES128-SHA (the review's)", tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
		{"ECDHE-ECDSA-AES256-SHA", tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, false},
		{"ECDHE-ECDSA-AES128-SHA256", tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, false},
		{"ECDHE-ECDSA-RC4-SHA", tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA, false},
		{"AES128-GCM-SHA256 (no forward secrecy)", tls.TLS_RSA_WITH_AES_128_GCM_SHA256, false},
		{"AES256-SHA", tls.TLS_RSA_WITH_AES_256_CBC_SHA, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := handshake(&tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tt.suite}})
			switch {
			case tt.accept && err != nil:
				t.Errorf("refused: %v", err)
			case tt.accept && st.CipherSuite != tt.suite:
				t.Errorf("negotiated %s", tls.CipherSuiteName(st.CipherSuite))
			case !tt.accept && err == nil:
				t.Errorf("accepted: negotiated %s", tls.CipherSuiteName(st.CipherSuite))
			}
		})
	}
	t.Run("TLS 1.3", func(t *testing.T) {
		if st, err := handshake(&tls.Config{MinVersion: tls.VersionTLS13}); err != nil || st.Version != tls.VersionTLS13 {
			t.Errorf("TLS 1.3: %v (version %x)", err, st.Version)
		}
	})
	t.Run("TLS 1.1", func(t *testing.T) {
		if _, err := handshake(&tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
			t.Error("TLS 1.1 accepted")
		}
	})

	// The review's own client: OpenSSL offering one TLS 1.2 suite.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl is not installed: the OpenSSL client is not tried")
		return
	}
	for _, c := range []struct {
		cipher string
		accept bool
	}{
		{"ECDHE-ECDSA-AES128-SHA", false},
		{"AES256-SHA", false},
		{"ECDHE-ECDSA-AES128-GCM-SHA256", true},
	} {
		t.Run("openssl "+c.cipher, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", addr, "-tls1_2", "-cipher", c.cipher, "-brief")
			cmd.Stdin = strings.NewReader("")
			out, err := cmd.CombinedOutput()
			if got := err == nil && strings.Contains(string(out), "Ciphersuite: "+c.cipher); got != c.accept {
				t.Errorf("openssl s_client -tls1_2 -cipher %s: accepted %v, want %v (err %v)\n%s", c.cipher, got, c.accept, err, out)
			}
		})
	}
}

// TestIssue12Item6AdminTokenNeverOverwritten: a missing admin.token.sha256
// beside an existing admin.token is recomputed from it (security review
// L9: the server used to generate a new token over the old one, locking
// the operators out), and a token file that holds no admin token stops
// the server rather than being replaced.
func TestIssue12Item6AdminTokenNeverOverwritten(t *testing.T) {
	data := t.TempDir()
	in := servertest.Start(t, servertest.Options{DataDir: data})
	tok := in.AdminToken
	tokenFile := in.AdminTokenFile
	in.Stop()
	if err := os.Remove(tokenFile + ".sha256"); err != nil {
		t.Fatal(err)
	}

	in2 := servertest.Start(t, servertest.Options{DataDir: data})
	if in2.AdminToken != tok {
		t.Fatalf("admin token changed from %.6s… to %.6s…", tok, in2.AdminToken)
	}
	if code, body := in2.Do(t, "GET", "/api/v1/tokens", nil, true); code != 200 {
		t.Fatalf("admin API with the kept token: HTTP %d %s", code, body)
	}
	if got := mode(t, tokenFile+".sha256"); got != 0o600 && runtime.GOOS != "windows" {
		t.Errorf("recomputed hash file mode %v", got)
	}
	in2.Stop()

	// A file that is not an admin token is not silently replaced.
	if err := os.Remove(tokenFile + ".sha256"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("not a token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &server.Config{}
	cfg.Server.APIListen, cfg.Server.GRPCListen, cfg.Server.Hostname = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
	cfg.Server.DataDir = data
	cfg.Policy.Dir = in.PolicyDir
	cfg.Defaults()
	s, err := server.New(t.Context(), cfg, nil)
	if err == nil {
		s.Close()
		t.Fatal("the server started with an admin token file that holds no token")
	}
	if !strings.Contains(err.Error(), tokenFile) {
		t.Errorf("error %q does not name the file", err)
	}
	if b, _ := os.ReadFile(tokenFile); string(b) != "not a token\n" {
		t.Errorf("the token file was overwritten: %q", b)
	}
}
