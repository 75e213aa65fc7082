package update

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vigo-enroll/vigo/schemas/agentbuild"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// distServer is a real HTTPS server that requires a client certificate and
// serves one build the way the Vigo server does.
type distServer struct {
	srv       *httptest.Server
	client    *http.Client // presents the envoy's certificate
	build     []byte       // bytes served by the download route
	latest    apiv1.AgentLatest
	keyPEM    []byte // served signing key; nil = 404
	downloads atomic.Int32
}

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func pubPEM(t *testing.T, pub ed25519.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// announce makes the server serve build as version, signed by priv (nil: unsigned).
func (d *distServer) announce(version string, build []byte, priv ed25519.PrivateKey) apiv1.AgentLatest {
	sum := sha256.Sum256(build)
	d.build = build
	d.latest = apiv1.AgentLatest{OS: "linux", Arch: "amd64", Version: version, SHA256: hex.EncodeToString(sum[:]),
		Size: int64(len(build)), URL: "/api/v1/agent/download/linux/amd64"}
	if priv != nil {
		d.latest.Signature = sign(priv, d.latest)
	}
	return d.latest
}

// sign signs l's statement for its version, platform and digest.
func sign(priv ed25519.PrivateKey, l apiv1.AgentLatest) string {
	sig, err := agentbuild.Sign(priv, agentbuild.Build{Version: l.Version, OS: l.OS, Arch: l.Arch, SHA256: l.SHA256})
	if err != nil {
		panic(err)
	}
	return sig
}

func newDistServer(t *testing.T) *distServer {
	t.Helper()
	d := &distServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/agent/latest", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(d.latest)
	})
	mux.HandleFunc("GET /api/v1/agent/download/{os}/{arch}", func(w http.ResponseWriter, r *http.Request) {
		d.downloads.Add(1)
		w.Write(d.build)
	})
	mux.HandleFunc("GET /api/v1/agent/signing-key", func(w http.ResponseWriter, r *http.Request) {
		if d.keyPEM == nil {
			w.WriteHeader(404)
			json.NewEncoder(w).Encode(apiv1.Error{Error: "agent builds are not signed on this server"})
			return
		}
		w.Write(d.keyPEM)
	})

	// The envoy's client certificate: self-signed Ed25519, trusted by the server.
	pub, priv := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "envoy"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)

	d.srv = httptest.NewUnstartedServer(mux)
	d.srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	d.srv.StartTLS()
	t.Cleanup(d.srv.Close)
	d.client = d.srv.Client()
	d.client.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}}
	return d
}

type execCall struct {
	path    string
	argv    []string
	content string // the binary's content when exec ran
}

// setup returns an updater over a temp binary holding "old build" at v1.0.0.
func setup(t *testing.T, d *distServer, pinned ed25519.PublicKey) (*Updater, *[]execCall) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vigo")
	if err := os.WriteFile(bin, []byte("old build"), 0o755); err != nil {
		t.Fatal(err)
	}
	calls := &[]execCall{}
	u := &Updater{
		CurrentVersion: "v1.0.0",
		BinaryPath:     bin,
		Client:         d.client,
		ServerURL:      d.srv.URL,
		SigningKey:     pinned,
		Args:           []string{"vigo", "run", "--config-dir", "/etc/vigo-envoy"},
		GOOS:           "linux",
		GOARCH:         "amd64",
		Exec: func(path string, argv, env []string) error {
			b, _ := os.ReadFile(path)
			*calls = append(*calls, execCall{path: path, argv: argv, content: string(b)})
			return nil
		},
	}
	return u, calls
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// leftovers lists files in the binary's folder other than the binary and its previous copy.
func leftovers(t *testing.T, bin string) []string {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Dir(bin))
	var extra []string
	for _, e := range entries {
		if n := e.Name(); n != filepath.Base(bin) && n != filepath.Base(bin)+PreviousSuffix {
			extra = append(extra, n)
		}
	}
	return extra
}

func TestApplyInstallsSignedBuild(t *testing.T) {
	t.Parallel()
	d := newDistServer(t)
	pub, priv := newKey(t)
	d.keyPEM = pubPEM(t, pub)
	u, calls := setup(t, d, pub)
	want := d.announce("v1.1.0", []byte("new build v1.1.0"), priv)

	if err := u.Apply(context.Background(), want, false); err != nil {
		t.Fatal(err)
	}
	wantCalls := []execCall{{path: u.BinaryPath, argv: u.Args, content: "new build v1.1.0"}}
	if diff := cmp.Diff(wantCalls, *calls, cmp.AllowUnexported(execCall{})); diff != "" {
		t.Errorf("exec calls (-want +got):\n%s", diff)
	}
	if got := readFile(t, u.BinaryPath+PreviousSuffix); got != "old build" {
		t.Errorf("previous binary %q, want the old build", got)
	}
	if fi, _ := os.Stat(u.BinaryPath); fi.Mode().Perm() != 0o755 {
		t.Errorf("new binary mode %v", fi.Mode().Perm())
	}
	if extra := leftovers(t, u.BinaryPath); len(extra) != 0 {
		t.Errorf("files left behind: %q", extra)
	}

	// Rollback restores the previous build.
	if err := Rollback(u.BinaryPath); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, u.BinaryPath); got != "old build" {
		t.Errorf("after rollback %q", got)
	}
}

func TestUpdateAsksTheServer(t *testing.T) {
	t.Parallel()
	d := newDistServer(t)
	u, calls := setup(t, d, nil)
	d.announce("v1.2.0", []byte("build 1.2.0"), nil)

	if err := u.Update(context.Background(), Want{Version: "v1.3.0"}); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("Update to an unserved version: %v", err)
	}
	if err := u.Update(context.Background(), Want{Version: "v1.2.0", SHA256: strings.Repeat("0", 64)}); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("Update with another digest than served: %v", err)
	}
	if len(*calls) != 0 || d.downloads.Load() != 0 {
		t.Fatal("refused updates downloaded or exec'd")
	}
	if err := u.Update(context.Background(), Want{Version: "v1.2.0", SHA256: d.latest.SHA256}); err != nil {
		t.Fatal(err)
	}
	if len(*calls) != 1 || readFile(t, u.BinaryPath) != "build 1.2.0" {
		t.Errorf("after Update: calls %v, binary %q", *calls, readFile(t, u.BinaryPath))
	}
}

func TestApplyRefuses(t *testing.T) {
	t.Parallel()
	pinned, pinnedPriv := newKey(t)
	other, otherPriv := newKey(t)
	tests := []struct {
		name    string
		pinned  ed25519.PublicKey
		prepare func(t *testing.T, d *distServer) apiv1.AgentLatest
		wantErr error
		// wantDownloads is how many downloads happened (signature checks come first).
		wantDownloads int32
	}{
		{
			name:   "signed by another key, server serves that key",
			pinned: pinned,
			prepare: func(t *testing.T, d *distServer) apiv1.AgentLatest {
				d.keyPEM = pubPEM(t, other)
				return d.announce("v2.0.0", []byte("evil build"), otherPriv)
			},
			wantErr: ErrSigningKeyChanged,
		},
		{
			name:   "signed by another key, server serves the pinned key",
			pinned: pinned,
			prepare: func(t *testing.T, d *distServer) apiv1.AgentLatest {
				d.keyPEM = pubPEM(t, pinned)
				return d.announce("v2.0.0", []byte("evil build"), otherPriv)
			},
			wantErr: ErrBadSignature,
		},
		{
			name:   "unsigned while a key is pinned",
			pinned: pinned,
			prepare: func(t *testing.T, d *distServer) apiv1.AgentLatest {
				return d.announce("v2.0.0", []byte("unsigned build"), nil)
			},
			wantErr: ErrUnsigned,
		},
		{
			name:   "signature for other bytes",
			pinned: pinned,
			prepare: func(t *testing.T, d *distServer) apiv1.AgentLatest {
				good := d.announce("v2.0.0", []byte("good build"), pinnedPriv)
				d.announce("v2.0.0", []byte("bad build"), nil)
				d.latest.Signature = good.Signature
				return d.latest
			},
			wantErr: ErrBadSignature,
		},
		{
			name:   "sha256 mismatch",
			pinned: pinned,
			prepare: func(t *testing.T, d *distServer) apiv1.AgentLatest {
				want := d.announce("v2.0.0", []byte("signed build"), pinnedPriv)
				d.build = []byte("swapped build") // same announce, other bytes
				return want
			},
			wantErr:       ErrChecksumMismatch,
			wantDownloads: 1,
		},
		{
			name: "sha256 mismatch, same size, nothing pinned",
			prepare: func(t *testing.T, d *distServer) apiv1.AgentLatest {
				want := d.announce("v2.0.0", []byte("build AAAA"), nil)
				d.build = []byte("build BBBB")
				return want
			},
			wantErr:       ErrChecksumMismatch,
			wantDownloads: 1,
		},
		{
			name: "same bytes under another version (exec loop)",
			prepare: func(t *testing.T, d *distServer) apiv1.AgentLatest {
				return d.announce("v2.0.0", []byte("old build"), nil)
			},
			wantErr: ErrAlreadyInstalled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDistServer(t)
			u, calls := setup(t, d, tt.pinned)
			want := tt.prepare(t, d)
			err := u.Apply(context.Background(), want, false)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply: %v, want %v", err, tt.wantErr)
			}
			if len(*calls) != 0 {
				t.Errorf("exec called: %v", *calls)
			}
			if got := readFile(t, u.BinaryPath); got != "old build" {
				t.Errorf("binary changed to %q", got)
			}
			if extra := leftovers(t, u.BinaryPath); len(extra) != 0 {
				t.Errorf("files left behind: %q", extra)
			}
			if got := d.downloads.Load(); got != tt.wantDownloads {
				t.Errorf("downloads %d, want %d", got, tt.wantDownloads)
			}
		})
	}
}

func TestApplyEqualVersionDoesNothing(t *testing.T) {
	t.Parallel()
	d := newDistServer(t)
	u, calls := setup(t, d, nil)
	want := d.announce("v1.0.0", []byte("a rebuild of 1.0.0"), nil)
	if err := u.Apply(context.Background(), want, false); err != nil {
		t.Fatal(err)
	}
	if err := u.Update(context.Background(), Want{Version: "v1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if len(*calls) != 0 || d.downloads.Load() != 0 || readFile(t, u.BinaryPath) != "old build" {
		t.Errorf("equal versions: calls %v, downloads %d, binary %q", *calls, d.downloads.Load(), readFile(t, u.BinaryPath))
	}
	if _, err := os.Stat(u.BinaryPath + PreviousSuffix); err == nil {
		t.Error("previous binary written for an equal version")
	}
}

func TestApplyExecFailureRollsBack(t *testing.T) {
	t.Parallel()
	d := newDistServer(t)
	u, _ := setup(t, d, nil)
	u.Exec = func(string, []string, []string) error { return errors.New("exec format error") }
	want := d.announce("v1.1.0", []byte("build for another CPU"), nil)
	err := u.Apply(context.Background(), want, false)
	if err == nil {
		t.Fatal("Apply succeeded although exec failed")
	}
	if got := readFile(t, u.BinaryPath); got != "old build" {
		t.Errorf("binary after failed exec %q, want the old build restored", got)
	}
}

func TestApplyRejectsBadAnnouncements(t *testing.T) {
	t.Parallel()
	d := newDistServer(t)
	good := d.announce("v1.1.0", []byte("x"), nil)
	tests := []struct {
		name   string
		mutate func(*apiv1.AgentLatest)
	}{
		{"other platform", func(l *apiv1.AgentLatest) { l.OS = "windows" }},
		{"bad digest", func(l *apiv1.AgentLatest) { l.SHA256 = "xyz" }},
		{"too large", func(l *apiv1.AgentLatest) { l.Size = DefaultMaxSize + 1 }},
		{"no size", func(l *apiv1.AgentLatest) { l.Size = 0 }},
		{"foreign host", func(l *apiv1.AgentLatest) { l.URL = "https://attacker.example/vigo" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, calls := setup(t, d, nil)
			l := good
			tt.mutate(&l)
			if err := u.Apply(context.Background(), l, false); err == nil {
				t.Fatal("Apply accepted a bad announcement")
			}
			if len(*calls) != 0 || readFile(t, u.BinaryPath) != "old build" {
				t.Error("bad announcement changed something")
			}
		})
	}
}

func TestDownloadNeedsClientCertificate(t *testing.T) {
	t.Parallel()
	d := newDistServer(t)
	u, _ := setup(t, d, nil)
	u.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: d.client.Transport.(*http.Transport).TLSClientConfig.Clone()}}
	u.Client.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
	if _, err := u.Latest(context.Background()); err == nil {
		t.Fatal("server answered a client without certificate: the test server is not mTLS")
	}
}
