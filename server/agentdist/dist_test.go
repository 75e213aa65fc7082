package agentdist

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vigo-enroll/vigo/schemas/agentbuild"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// newDistDir writes fake binaries and their manifest into a temp folder.
func newDistDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := BuildManifest(dir, "v1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newServer(t *testing.T, d *Dist) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/agent/latest", d.HandleLatest)
	mux.HandleFunc("GET /api/v1/agent/download/{os}/{arch}", d.HandleDownload)
	mux.HandleFunc("GET /api/v1/agent/signing-key", d.HandleSigningKey)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestManifestAndLatest(t *testing.T) {
	t.Parallel()
	dir := newDistDir(t, map[string]string{
		"vigo-linux-amd64":       "linux amd64 build",
		"vigo-windows-amd64.exe": "windows build",
		"vigo-darwin-arm64.exe":  "ignored: .exe on darwin",
		"README":                 "ignored",
	})
	m, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &Manifest{Files: []ManifestFile{
		{OS: "linux", Arch: "amd64", File: "vigo-linux-amd64", Version: "v1.0.0", SHA256: sha([]byte("linux amd64 build")), Size: 17},
		{OS: "windows", Arch: "amd64", File: "vigo-windows-amd64.exe", Version: "v1.0.0", SHA256: sha([]byte("windows build")), Size: 13},
	}}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Fatalf("manifest (-want +got):\n%s", diff)
	}
	d, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := d.Latest("linux", "amd64")
	if !ok {
		t.Fatal("Latest(linux, amd64) not found")
	}
	wantLatest := apiv1.AgentLatest{OS: "linux", Arch: "amd64", Version: "v1.0.0", SHA256: sha([]byte("linux amd64 build")), Size: 17, URL: "/api/v1/agent/download/linux/amd64"}
	if diff := cmp.Diff(wantLatest, got); diff != "" {
		t.Errorf("Latest (-want +got):\n%s", diff)
	}
	if _, ok := d.Latest("linux", "arm64"); ok {
		t.Error("Latest(linux, arm64) found, want missing")
	}
	if diff := cmp.Diff([]string{"linux/amd64", "windows/amd64"}, d.Available()); diff != "" {
		t.Errorf("Available (-want +got):\n%s", diff)
	}
	if d.SigningKey() != nil || d.SigningKeyPEM() != nil {
		t.Error("unsigned distribution has a signing key")
	}
}

func TestMissingDirServesNothing(t *testing.T) {
	t.Parallel()
	d, err := New(Config{Dir: filepath.Join(t.TempDir(), "nope")})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, d)
	code, body := get(t, srv.URL+"/api/v1/agent/latest?os=linux&arch=amd64")
	if code != 404 || !strings.Contains(body, "serves no agent builds") {
		t.Errorf("got %d %s", code, body)
	}
}

func TestBuildManifestReadsVersionFromBuildInfo(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a Go program")
	}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module example.com/fake\n\ngo 1.26.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-ldflags", "-s -w -X "+VersionVar+"=v2.3.4-rc.1", "-o", filepath.Join(dir, "vigo-linux-arm64"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	m, err := BuildManifest(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 1 || m.Files[0].Version != "v2.3.4-rc.1" {
		t.Errorf("manifest files %+v, want version v2.3.4-rc.1", m.Files)
	}

	// A binary whose name lies about its platform is refused.
	if err := os.Rename(filepath.Join(dir, "vigo-linux-arm64"), filepath.Join(dir, "vigo-linux-amd64")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, ManifestName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if _, err := BuildManifest(dir, ""); err == nil || !strings.Contains(err.Error(), "built for linux/arm64") {
		t.Errorf("mislabelled binary: got %v", err)
	}
}

func TestBuildManifestNeedsAVersion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "vigo-linux-amd64"), []byte("not a Go binary"), 0o755)
	if _, err := BuildManifest(dir, ""); err == nil {
		t.Fatal("BuildManifest without any version succeeded")
	}
}

func TestManifestValidation(t *testing.T) {
	t.Parallel()
	good := ManifestFile{OS: "linux", Arch: "amd64", File: "vigo-linux-amd64", Version: "v1", SHA256: strings.Repeat("a", 64), Size: 1}
	tests := []struct {
		name string
		json string
	}{
		{"traversal", `{"files":[{"os":"linux","arch":"amd64","file":"../../etc/passwd","version":"v1","sha256":"` + good.SHA256 + `","size":1}]}`},
		{"absolute", `{"files":[{"os":"linux","arch":"amd64","file":"/etc/passwd","version":"v1","sha256":"` + good.SHA256 + `","size":1}]}`},
		{"bad sha", `{"files":[{"os":"linux","arch":"amd64","file":"x","version":"v1","sha256":"ABC","size":1}]}`},
		{"bad os", `{"files":[{"os":"Linux/x","arch":"amd64","file":"x","version":"v1","sha256":"` + good.SHA256 + `","size":1}]}`},
		{"bad version", `{"files":[{"os":"linux","arch":"amd64","file":"x","version":"v1 ; rm","sha256":"` + good.SHA256 + `","size":1}]}`},
		{"zero size", `{"files":[{"os":"linux","arch":"amd64","file":"x","version":"v1","sha256":"` + good.SHA256 + `","size":0}]}`},
		{"duplicate", `{"files":[{"os":"linux","arch":"amd64","file":"x","version":"v1","sha256":"` + good.SHA256 + `","size":1},{"os":"linux","arch":"amd64","file":"y","version":"v1","sha256":"` + good.SHA256 + `","size":1}]}`},
		{"unknown field", `{"filez":[]}`},
		{"not json", `{`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, ManifestName), []byte(tt.json), 0o644)
			if _, err := ReadManifest(dir); err == nil {
				t.Fatal("ReadManifest accepted an invalid manifest")
			}
			if _, err := New(Config{Dir: dir}); err == nil {
				t.Fatal("New accepted an invalid manifest")
			}
		})
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHandlers(t *testing.T) {
	t.Parallel()
	content := "linux amd64 build"
	dir := newDistDir(t, map[string]string{"vigo-linux-amd64": content, "vigo-darwin-arm64": "mac"})
	d, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, d)
	digest := sha([]byte(content))

	latestJSON, _ := json.Marshal(apiv1.AgentLatest{OS: "linux", Arch: "amd64", Version: "v1.0.0", SHA256: digest, Size: int64(len(content)), URL: "/api/v1/agent/download/linux/amd64"})
	tests := []struct {
		name       string
		method     string
		path       string
		header     map[string]string
		wantCode   int
		wantBody   string
		wantHeader map[string]string
	}{
		{name: "latest", method: "GET", path: "/api/v1/agent/latest?os=linux&arch=amd64", wantCode: 200, wantBody: string(latestJSON) + "\n",
			wantHeader: map[string]string{"Content-Type": "application/json", "Cache-Control": "no-cache"}},
		{name: "latest head", method: "HEAD", path: "/api/v1/agent/latest?os=linux&arch=amd64", wantCode: 200, wantBody: "",
			wantHeader: map[string]string{"Content-Length": "", "Cache-Control": "no-cache"}},
		{name: "latest missing params", method: "GET", path: "/api/v1/agent/latest?os=linux", wantCode: 400,
			wantBody: `{"error":"the os and arch query parameters are required"}` + "\n"},
		{name: "latest unknown", method: "GET", path: "/api/v1/agent/latest?os=plan9&arch=amd64", wantCode: 404,
			wantBody: `{"error":"no agent build for plan9/amd64; available: darwin/arm64, linux/amd64"}` + "\n"},
		{name: "latest odd input not echoed", method: "GET", path: "/api/v1/agent/latest?os=%3Cscript%3E&arch=amd64", wantCode: 404,
			wantBody: `{"error":"no agent build for ?/?; available: darwin/arm64, linux/amd64"}` + "\n"},
		{name: "download", method: "GET", path: "/api/v1/agent/download/linux/amd64", wantCode: 200, wantBody: content,
			wantHeader: map[string]string{"ETag": `"` + digest + `"`, "Cache-Control": "no-cache", "Content-Type": "application/octet-stream",
				"X-Vigo-Version": "v1.0.0", "X-Vigo-Sha256": digest, "Content-Length": "17", "Content-Disposition": `attachment; filename="vigo"`}},
		{name: "download head", method: "HEAD", path: "/api/v1/agent/download/linux/amd64", wantCode: 200, wantBody: "",
			wantHeader: map[string]string{"ETag": `"` + digest + `"`, "Content-Length": "17", "Accept-Ranges": "bytes"}},
		{name: "download not modified", method: "GET", path: "/api/v1/agent/download/linux/amd64", header: map[string]string{"If-None-Match": `"` + digest + `"`},
			wantCode: 304, wantBody: ""},
		{name: "download modified", method: "GET", path: "/api/v1/agent/download/linux/amd64", header: map[string]string{"If-None-Match": `"other"`},
			wantCode: 200, wantBody: content},
		{name: "download range", method: "GET", path: "/api/v1/agent/download/linux/amd64", header: map[string]string{"Range": "bytes=0-4"},
			wantCode: 206, wantBody: "linux"},
		{name: "download missing", method: "GET", path: "/api/v1/agent/download/linux/riscv64", wantCode: 404,
			wantBody:   `{"error":"no agent build for linux/riscv64; available: darwin/arm64, linux/amd64"}` + "\n",
			wantHeader: map[string]string{"Content-Type": "application/json"}},
		{name: "signing key unsigned", method: "GET", path: "/api/v1/agent/signing-key", wantCode: 404,
			wantBody: `{"error":"agent builds are not signed on this server"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode {
				t.Errorf("status %d, want %d (%s)", resp.StatusCode, tt.wantCode, body)
			}
			if diff := cmp.Diff(tt.wantBody, string(body)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			for k, v := range tt.wantHeader {
				got := resp.Header.Get(k)
				if v == "" && got == "" {
					t.Errorf("header %s missing", k)
				} else if v != "" && got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestSignedDistribution(t *testing.T) {
	t.Parallel()
	dir := newDistDir(t, map[string]string{"vigo-linux-amd64": "build one", "vigo-freebsd-amd64": "build two"})
	keyPath := filepath.Join(t.TempDir(), "agent-signing.key")
	if err := WriteKeyPair(keyPath, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyPair(keyPath, nil); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteKeyPair: got %v, want ErrExist", err)
	}
	if fi, _ := os.Stat(keyPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	privPEM, _ := os.ReadFile(keyPath)
	pubPEM, _ := os.ReadFile(keyPath + ".pub")
	priv, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := pemkey.ParsePublic(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SignDir(dir, priv); err != nil {
		t.Fatal(err)
	}

	d, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := d.Latest("linux", "amd64")
	if l.Signature == "" || !agentbuild.Verify(pub, agentbuild.Build{Version: l.Version, OS: l.OS, Arch: l.Arch, SHA256: l.SHA256}, l.Signature) {
		t.Fatalf("signature %q does not verify", l.Signature)
	}
	if !bytes.Equal(d.SigningKeyPEM(), pubPEM) {
		t.Errorf("SigningKeyPEM differs from the generated public key")
	}
	srv := newServer(t, d)
	code, body := get(t, srv.URL+"/api/v1/agent/signing-key")
	if code != 200 || body != string(pubPEM) {
		t.Errorf("signing-key: %d %q", code, body)
	}
	resp, err := http.Head(srv.URL + "/api/v1/agent/download/linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Vigo-Signature") != l.Signature {
		t.Errorf("X-Vigo-Signature %q, want %q", resp.Header.Get("X-Vigo-Signature"), l.Signature)
	}

	// Rebuilding the manifest keeps signatures of unchanged files only.
	os.WriteFile(filepath.Join(dir, "vigo-freebsd-amd64"), []byte("rebuilt"), 0o755)
	m, err := BuildManifest(dir, "v1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	sigs := map[string]bool{}
	for _, f := range m.Files {
		sigs[f.File] = f.Signature != ""
	}
	if diff := cmp.Diff(map[string]bool{"vigo-freebsd-amd64": false, "vigo-linux-amd64": true}, sigs); diff != "" {
		t.Errorf("signatures kept (-want +got):\n%s", diff)
	}

	// SignDir refuses a binary that changed after the manifest was written.
	if _, err := SignDir(dir, priv); err == nil || !strings.Contains(err.Error(), "changed since the manifest") {
		t.Errorf("SignDir over a changed file: %v", err)
	}
}

func TestSignatureOfAnotherKeyNotServed(t *testing.T) {
	t.Parallel()
	dir := newDistDir(t, map[string]string{"vigo-linux-amd64": "build"})
	tmp := t.TempDir()
	for _, name := range []string{"a.key", "b.key"} {
		if err := WriteKeyPair(filepath.Join(tmp, name), nil); err != nil {
			t.Fatal(err)
		}
	}
	privPEM, _ := os.ReadFile(filepath.Join(tmp, "a.key"))
	priv, _ := ParsePrivateKey(privPEM)
	if _, err := SignDir(dir, priv); err != nil {
		t.Fatal(err)
	}
	// The server is configured with key b: a's signatures are not served.
	d, err := New(Config{Dir: dir, SigningKeyFile: filepath.Join(tmp, "b.key.pub")})
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := d.Latest("linux", "amd64"); l.Signature != "" {
		t.Errorf("signature by another key served: %q", l.Signature)
	}
	if _, err := New(Config{Dir: dir, SigningKeyFile: filepath.Join(tmp, "missing.pub")}); err == nil {
		t.Error("New with a missing signing key file succeeded")
	}
}

func TestReloadOnChange(t *testing.T) {
	t.Parallel()
	dir := newDistDir(t, map[string]string{"vigo-linux-amd64": "v1 build"})
	d, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, d)
	bin := filepath.Join(dir, "vigo-linux-amd64")
	later := time.Now().Add(time.Hour) // distinct modification times, whatever the file system's resolution

	// A new build and manifest: served at once.
	os.WriteFile(bin, []byte("v2 build, longer"), 0o755)
	os.Chtimes(bin, later, later)
	m, err := BuildManifest(dir, "v2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	WriteManifest(dir, m)
	os.Chtimes(filepath.Join(dir, ManifestName), later, later)
	if l, _ := d.Latest("linux", "amd64"); l.Version != "v2.0.0" || l.SHA256 != sha([]byte("v2 build, longer")) {
		t.Fatalf("after a new manifest: %+v", l)
	}
	if code, body := get(t, srv.URL+"/api/v1/agent/download/linux/amd64"); code != 200 || body != "v2 build, longer" {
		t.Fatalf("download after reload: %d %q", code, body)
	}

	// A broken manifest keeps the last good state.
	os.WriteFile(filepath.Join(dir, ManifestName), []byte("{broken"), 0o644)
	os.Chtimes(filepath.Join(dir, ManifestName), later.Add(time.Hour), later.Add(time.Hour))
	if l, ok := d.Latest("linux", "amd64"); !ok || l.Version != "v2.0.0" {
		t.Fatalf("after a broken manifest: %+v %v", l, ok)
	}
	if err := d.Reload(); err == nil {
		t.Error("Reload of a broken manifest succeeded")
	}
	WriteManifest(dir, m)
	os.Chtimes(filepath.Join(dir, ManifestName), later.Add(2*time.Hour), later.Add(2*time.Hour))

	// A binary replaced behind the manifest's back is no longer served.
	os.WriteFile(bin, []byte("tampered build!!"), 0o755) // same size as the listed one
	os.Chtimes(bin, later.Add(3*time.Hour), later.Add(3*time.Hour))
	code, body := get(t, srv.URL+"/api/v1/agent/download/linux/amd64")
	if code != 404 || !strings.Contains(body, "no agent build for linux/amd64") {
		t.Errorf("tampered binary: %d %s", code, body)
	}
}

// TestIssue12Item3SignatureBindsEntry: dist sign signs each build's
// version, OS, arch and digest; a signature moved to another entry (an
// old version's, another platform's) or made over the digest only (before
// issue 12) does not verify, so the server does not serve it and vigocli
// dist verify names it.
func TestIssue12Item3SignatureBindsEntry(t *testing.T) {
	t.Parallel()
	dir := newDistDir(t, map[string]string{"vigo-linux-amd64": "same bytes", "vigo-linux-arm64": "same bytes"})
	keyPath := filepath.Join(t.TempDir(), "k")
	if err := WriteKeyPair(keyPath, nil); err != nil {
		t.Fatal(err)
	}
	privPEM, _ := os.ReadFile(keyPath)
	priv, _ := ParsePrivateKey(privPEM)
	m, err := SignDir(dir, priv)
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	for _, f := range m.Files {
		if !agentbuild.Verify(pub, f.Build(), f.Signature) {
			t.Fatalf("%s: signature does not verify", f.File)
		}
	}
	// Same bytes, so the same digest: only the platform tells them apart.
	amd, arm := m.Files[0], m.Files[1]
	if amd.SHA256 != arm.SHA256 || amd.Signature == arm.Signature {
		t.Fatalf("the two platforms' builds: %+v %+v", amd, arm)
	}

	tamper := func(t *testing.T, edit func(m *Manifest)) *Dist {
		t.Helper()
		m2, err := ReadManifest(dir)
		if err != nil {
			t.Fatal(err)
		}
		edit(m2)
		d2 := t.TempDir()
		for _, f := range m2.Files {
			data, _ := os.ReadFile(filepath.Join(dir, f.File))
			os.WriteFile(filepath.Join(d2, f.File), data, 0o755)
		}
		if err := WriteManifest(d2, m2); err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(d2, nil); err == nil || !strings.Contains(err.Error(), "signature does not verify") {
			t.Errorf("Verify of the tampered folder: %v", err)
		}
		d, err := New(Config{Dir: d2})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	tests := []struct {
		name string
		edit func(m *Manifest)
	}{
		{"another platform's signature", func(m *Manifest) { m.Files[1].Signature = m.Files[0].Signature }},
		{"an older version under the signature", func(m *Manifest) { m.Files[1].Version = "v0.0.1-old" }},
		{"signature over the digest only", func(m *Manifest) {
			d, _ := hex.DecodeString(m.Files[1].SHA256)
			m.Files[1].Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, d))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tamper(t, tt.edit)
			if l, _ := d.Latest("linux", "arm64"); l.Signature != "" {
				t.Errorf("served signature %q for a build it does not sign", l.Signature)
			}
			if l, _ := d.Latest("linux", "amd64"); l.Signature == "" {
				t.Error("the untouched build lost its signature")
			}
		})
	}
}

// FuzzParseManifest: any input is parsed or refused without a panic, and
// what is accepted is valid and survives a write and a read unchanged.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"files":[]}`))
	f.Add([]byte(`{"signing_key":"x","files":[{"os":"linux","arch":"amd64","file":"vigo-linux-amd64","version":"v1.2.3","sha256":"` +
		strings.Repeat("ab", 32) + `","size":3,"signature":"AAAA"}]}`))
	f.Add([]byte(`{"files":[{"os":"linux","arch":"amd64","file":"../etc/passwd","version":"v1","sha256":"","size":1}]}`))
	f.Add([]byte(`{"files":[]} trailing`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("ParseManifest accepted an invalid manifest: %v", err)
		}
		for _, fl := range m.Files {
			if fl.File != filepath.Base(fl.File) || strings.ContainsAny(fl.File, `/\`) || fl.File == ".." {
				t.Fatalf("file name %q leaves the folder", fl.File)
			}
			_, _ = agentbuild.Statement(fl.Build())
		}
		dir := t.TempDir()
		if err := WriteManifest(dir, m); err != nil {
			t.Fatalf("write back: %v", err)
		}
		again, err := ReadManifest(dir)
		if err != nil {
			t.Fatalf("read back: %v", err)
		}
		if diff := cmp.Diff(m, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip (-parsed +reread):\n%s", diff)
		}
	})
}
