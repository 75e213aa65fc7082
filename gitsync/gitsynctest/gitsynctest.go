// Package gitsynctest makes real Git repositories with the git CLI in
// t.TempDir() for tests: a bare "remote", a work clone to commit in, SSH
// signing keys, and an HTTP server running git http-backend.
package gitsynctest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Repo is a bare repository (the remote) and a work clone of it with the
// branch "main" checked out.
type Repo struct {
	t testing.TB
	// Bare is the path of the bare repository.
	Bare string
	// Work is the path of the work clone.
	Work string
	home string
}

// NewRepo creates an empty bare repository and a work clone with a user
// configured. Nothing from the user's global git configuration is used.
func NewRepo(t testing.TB) *Repo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	r := &Repo{t: t, Bare: filepath.Join(dir, "remote.git"), Work: filepath.Join(dir, "work"), home: filepath.Join(dir, "home")}
	if err := os.MkdirAll(r.home, 0o700); err != nil {
		t.Fatal(err)
	}
	r.run(dir, "init", "--quiet", "--bare", "--initial-branch=main", r.Bare)
	r.run(dir, "init", "--quiet", "--initial-branch=main", r.Work)
	r.Git("config", "user.name", "Test Author")
	r.Git("config", "user.email", "author@example.com")
	r.Git("config", "commit.gpgsign", "false")
	r.Git("remote", "add", "origin", r.Bare)
	return r
}

// URL returns the file:// URL of the bare repository.
func (r *Repo) URL() string { return "file://" + filepath.ToSlash(r.Bare) }

func (r *Repo) env() []string {
	return append(os.Environ(),
		"HOME="+r.home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_TERMINAL_PROMPT=0",
		"LC_ALL=C",
	)
}

func (r *Repo) run(dir string, args ...string) string {
	r.t.Helper()
	return r.runEnv(dir, nil, args...)
}

func (r *Repo) runEnv(dir string, env []string, args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(r.env(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Git runs git with args in the work clone and returns its trimmed output.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return r.run(r.Work, args...)
}

// WriteFiles writes files (slash paths relative to the work clone) without
// committing.
func (r *Repo) WriteFiles(files map[string]string) {
	r.t.Helper()
	for name, content := range files {
		p := filepath.Join(r.Work, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
}

// Commit writes files, stages everything in the work clone and commits. It
// returns the commit id.
func (r *Repo) Commit(files map[string]string, msg string) string {
	r.t.Helper()
	return r.commit(files, msg)
}

// CommitSigned is Commit with an SSH signature by key
// (git -c gpg.format=ssh -c user.signingkey=...).
func (r *Repo) CommitSigned(files map[string]string, msg string, key *SSHKey) string {
	r.t.Helper()
	return r.commit(files, msg, "-c", "gpg.format=ssh", "-c", "user.signingkey="+key.PrivateFile, "-c", "commit.gpgsign=true")
}

// CommitGPGSigned is Commit with an OpenPGP signature by key.
func (r *Repo) CommitGPGSigned(files map[string]string, msg string, key *GPGKey) string {
	r.t.Helper()
	return r.commitEnv(files, msg, []string{"GNUPGHOME=" + key.Home},
		"-c", "gpg.format=openpgp", "-c", "user.signingkey="+key.Fingerprint, "-c", "commit.gpgsign=true")
}

func (r *Repo) commit(files map[string]string, msg string, cfg ...string) string {
	r.t.Helper()
	return r.commitEnv(files, msg, nil, cfg...)
}

func (r *Repo) commitEnv(files map[string]string, msg string, env []string, cfg ...string) string {
	r.t.Helper()
	r.WriteFiles(files)
	r.Git("add", "--all")
	args := append(cfg, "commit", "--quiet", "--allow-empty", "-m", msg)
	r.runEnv(r.Work, env, args...)
	return r.Git("rev-parse", "HEAD")
}

// GPGKey is an OpenPGP signing key in its own GnuPG home.
type GPGKey struct {
	// Home is the GNUPGHOME holding the secret key.
	Home string
	// Fingerprint is the primary key fingerprint, upper-case hex.
	Fingerprint string
	// KeyringFile holds the armored public key.
	KeyringFile string
}

// NewGPGKey generates an Ed25519 OpenPGP key with gpg (skipping the test
// when gpg is not installed). The gpg-agent is stopped with the test.
func NewGPGKey(t testing.TB) *GPGKey {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg is not installed")
	}
	k := &GPGKey{Home: t.TempDir()}
	gpg := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("gpg", append([]string{"--batch", "--no-tty", "--homedir", k.Home}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+k.Home)
		_ = cmd.Run()
	})
	gpg("--passphrase", "", "--quick-gen-key", "Test Signer <signer@example.com>", "ed25519", "sign", "never")
	for line := range strings.SplitSeq(gpg("--with-colons", "--list-keys"), "\n") {
		if f := strings.Split(line, ":"); f[0] == "fpr" && len(f) > 9 {
			k.Fingerprint = f[9]
			break
		}
	}
	if k.Fingerprint == "" {
		t.Fatal("gpg: no fingerprint")
	}
	k.KeyringFile = filepath.Join(t.TempDir(), "keyring.asc")
	if err := os.WriteFile(k.KeyringFile, []byte(gpg("--armor", "--export", k.Fingerprint)), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

// Remove deletes files from the work clone (they go with the next commit).
func (r *Repo) Remove(names ...string) {
	r.t.Helper()
	r.Git(append([]string{"rm", "--quiet", "-r"}, names...)...)
}

// Symlink creates a symbolic link name -> target in the work clone.
func (r *Repo) Symlink(name, target string) {
	r.t.Helper()
	p := filepath.Join(r.Work, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		r.t.Fatal(err)
	}
}

// Push pushes main to the bare repository.
func (r *Repo) Push() {
	r.t.Helper()
	r.Git("push", "--quiet", "origin", "main")
}

// ForcePush pushes main with --force (after history was rewritten, e.g.
// with Git("reset", "--hard", "HEAD~1") and a new commit).
func (r *Repo) ForcePush() {
	r.t.Helper()
	r.Git("push", "--quiet", "--force", "origin", "main")
}

// SSHKey is an Ed25519 key pair on disk for signing commits.
type SSHKey struct {
	// PrivateFile is the OpenSSH private key (mode 0600); PrivateFile+".pub"
	// holds the public key.
	PrivateFile string
	// Public is the authorized_keys line of the public key.
	Public string
	// Fingerprint is "SHA256:..." as printed by ssh-keygen -l.
	Fingerprint string
	// Signer signs with the key (to build SSH servers or known_hosts in tests).
	Signer ssh.Signer
}

// NewSSHKey generates an Ed25519 key in t.TempDir().
func NewSSHKey(t testing.TB) *SSHKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	k := &SSHKey{
		PrivateFile: filepath.Join(t.TempDir(), "id_ed25519"),
		Public:      strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))),
		Fingerprint: ssh.FingerprintSHA256(signer.PublicKey()),
		Signer:      signer,
	}
	if err := os.WriteFile(k.PrivateFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.PrivateFile+".pub", []byte(k.Public+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

// AllowedSigners writes an ssh allowed_signers file listing keys (principal
// "signer@example.com", namespace git) and returns its path.
func AllowedSigners(t testing.TB, keys ...*SSHKey) string {
	t.Helper()
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(`signer@example.com namespaces="git" ` + k.Public + "\n")
	}
	p := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// HTTPOptions configures NewHTTPServer. When any credential is set, every
// request must present it: basic auth with Username and Password, or
// "Authorization: Bearer Token".
type HTTPOptions struct {
	Username string
	Password string
	Token    string
}

// HTTPServer serves a bare repository over smart HTTP with git http-backend
// on 127.0.0.1.
type HTTPServer struct {
	// URL is the repository's URL.
	URL string

	t       testing.TB
	addr    string
	handler http.Handler
	mu      sync.Mutex
	srv     *httptest.Server
	fetches atomic.Int64
	lists   atomic.Int64
}

// ServeHTTP serves bareDir over HTTP without authentication and returns
// its URL. The server stops with the test.
func ServeHTTP(t testing.TB, bareDir string) string {
	t.Helper()
	return NewHTTPServer(t, bareDir, HTTPOptions{}).URL
}

// NewHTTPServer serves bareDir over HTTP with opts. The server stops with the test.
func NewHTTPServer(t testing.TB, bareDir string, opts HTTPOptions) *HTTPServer {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skipf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	s := &HTTPServer{t: t}
	cgiH := &cgi.Handler{
		Path: backend,
		Env: []string{
			"GIT_PROJECT_ROOT=" + filepath.Dir(bareDir),
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=" + os.DevNull,
		},
	}
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if opts != (HTTPOptions{}) && !authorized(r, opts) {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
			s.fetches.Add(1)
		case strings.HasSuffix(r.URL.Path, "/info/refs"):
			s.lists.Add(1)
		}
		cgiH.ServeHTTP(w, r)
	})
	s.srv = httptest.NewServer(s.handler)
	s.addr = s.srv.Listener.Addr().String()
	s.URL = s.srv.URL + "/" + filepath.Base(bareDir)
	t.Cleanup(s.Stop)
	return s
}

func authorized(r *http.Request, o HTTPOptions) bool {
	if u, p, ok := r.BasicAuth(); ok && (o.Username != "" || o.Password != "") {
		return u == o.Username && p == o.Password
	}
	if o.Token != "" {
		return r.Header.Get("Authorization") == "Bearer "+o.Token
	}
	return false
}

// Fetches returns how many object transfers (POST git-upload-pack) were served.
func (s *HTTPServer) Fetches() int64 { return s.fetches.Load() }

// Lists returns how many ref advertisements (GET info/refs) were served.
func (s *HTTPServer) Lists() int64 { return s.lists.Load() }

// Stop closes the server: connections to its address are refused.
func (s *HTTPServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
}

// Start restarts a stopped server on the same address.
func (s *HTTPServer) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("restart http server on %s: %v", s.addr, err)
	}
	s.srv = httptest.NewUnstartedServer(s.handler)
	s.srv.Listener.Close()
	s.srv.Listener = ln
	s.srv.Start()
}
