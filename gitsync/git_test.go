package gitsync

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"golang.org/x/crypto/ssh"
)

func mustFetch(t *testing.T, s Source) (Revision, bool) {
	t.Helper()
	rev, changed, err := s.Fetch(context.Background())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return rev, changed
}

// transports returns the URL of repo over each transport and a function
// counting object transfers (nil when the transport cannot count).
func transports(t *testing.T, repo *gitsynctest.Repo) map[string]struct {
	url     string
	fetches func() int64
} {
	srv := gitsynctest.NewHTTPServer(t, repo.Bare, gitsynctest.HTTPOptions{})
	return map[string]struct {
		url     string
		fetches func() int64
	}{
		"file": {url: repo.URL()},
		"http": {url: srv.URL, fetches: srv.Fetches},
	}
}

func TestGitFetch(t *testing.T) {
	t.Parallel()
	repo := gitsynctest.NewRepo(t)
	first := repo.Commit(map[string]string{
		"README.md":          "not policy",
		"policy/a.cue":       "package policy\n",
		"policy/b.cue":       "package policy\n// b\n",
		"policy/cue.mod/m.x": "module",
	}, "first")
	repo.Push()

	for name, tr := range transports(t, repo) {
		t.Run(name, func(t *testing.T) {
			g, err := NewGit(GitConfig{URL: tr.url, Path: "/policy/"})
			if err != nil {
				t.Fatal(err)
			}
			rev, changed := mustFetch(t, g)
			if !changed || rev.ID != first {
				t.Fatalf("first Fetch = %s changed=%v, want %s changed=true", rev.ID, changed, first)
			}
			want := map[string]string{"a.cue": "package policy\n", "b.cue": "package policy\n// b\n"}
			if diff := cmp.Diff(want, treeMap(rev.Tree)); diff != "" {
				t.Errorf("files (-want +got):\n%s", diff)
			}
			if rev.Author != "Test Author <author@example.com>" || rev.Time.IsZero() || rev.Signer != "" || rev.VerifyErr != nil {
				t.Errorf("revision metadata = %q %v %q %v", rev.Author, rev.Time, rev.Signer, rev.VerifyErr)
			}
			if rev.Name != "main@sha1:"+first || rev.Subject != "first" {
				t.Errorf("revision name %q subject %q, want main@sha1:%s and the commit subject", rev.Name, rev.Subject, first)
			}

			var before int64
			if tr.fetches != nil {
				before = tr.fetches()
			}
			rev2, changed := mustFetch(t, g)
			if changed || rev2.ID != first {
				t.Errorf("unchanged Fetch = %s changed=%v, want %s changed=false", rev2.ID, changed, first)
			}
			if tr.fetches != nil && tr.fetches() != before {
				t.Errorf("unchanged head transferred objects: %d fetches, want %d", tr.fetches(), before)
			}
		})
	}
}

func TestGitFollowsNewCommitsAndForcePush(t *testing.T) {
	t.Parallel()
	repo := gitsynctest.NewRepo(t)
	repo.Commit(map[string]string{"a.cue": "v1"}, "v1")
	repo.Push()
	for name, tr := range transports(t, repo) {
		t.Run(name, func(t *testing.T) {
			// Subtests share the repo: run them one after the other.
			g, err := NewGit(GitConfig{URL: tr.url})
			if err != nil {
				t.Fatal(err)
			}
			mustFetch(t, g)

			id2 := repo.Commit(map[string]string{"a.cue": "v2-" + name}, "v2")
			repo.Push()
			rev, changed := mustFetch(t, g)
			if !changed || rev.ID != id2 || treeMap(rev.Tree)["a.cue"] != "v2-"+name {
				t.Fatalf("after push: %s changed=%v files=%v, want %s", rev.ID, changed, treeMap(rev.Tree), id2)
			}

			repo.Git("reset", "--quiet", "--hard", "HEAD~1")
			id3 := repo.Commit(map[string]string{"a.cue": "rewritten-" + name}, "rewritten")
			repo.ForcePush()
			rev, changed = mustFetch(t, g)
			if !changed || rev.ID != id3 || treeMap(rev.Tree)["a.cue"] != "rewritten-"+name {
				t.Fatalf("after force-push: %s changed=%v files=%v, want %s", rev.ID, changed, treeMap(rev.Tree), id3)
			}
		})
	}
}

// TestGitPolicyFolder checks how the Git source reports a policy folder
// (policy.git.path) that is not a folder of the commit, and a missing branch.
// The tree rules inside the folder are tested by TestTreeRules.
func TestGitPolicyFolder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(r *gitsynctest.Repo)
		cfg     GitConfig
		want    map[string]string // treeMap
		wantErr error
	}{
		{
			name:  "symlinked policy folder",
			setup: func(r *gitsynctest.Repo) { r.Symlink("alias", "policy") },
			cfg:   GitConfig{Path: "alias"},
			want:  map[string]string{"!alias": "the policy folder (policy.git.path) is a symbolic link: it must be a folder"},
		},
		{
			name:  "missing folder",
			setup: func(r *gitsynctest.Repo) {},
			cfg:   GitConfig{Path: "nope"},
			want:  map[string]string{"!nope": "the policy folder (policy.git.path) does not exist in this commit"},
		},
		{
			name:  "a file",
			setup: func(r *gitsynctest.Repo) { r.WriteFiles(map[string]string{"plain": "x"}) },
			cfg:   GitConfig{Path: "plain"},
			want:  map[string]string{"!plain": "the policy folder (policy.git.path) is a file: it must be a folder"},
		},
		{
			name:    "missing branch",
			setup:   func(r *gitsynctest.Repo) {},
			cfg:     GitConfig{Ref: "prod"},
			wantErr: ErrRefNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			repo := gitsynctest.NewRepo(t)
			repo.WriteFiles(map[string]string{"policy/a.cue": "package policy\n"})
			tt.setup(repo)
			repo.Commit(nil, "commit")
			repo.Push()
			srv := gitsynctest.NewHTTPServer(t, repo.Bare, gitsynctest.HTTPOptions{})
			cfg := tt.cfg
			cfg.URL = srv.URL
			g, err := NewGit(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rev, _, err := g.Fetch(context.Background())
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Fetch error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.want, treeMap(rev.Tree)); diff != "" {
				t.Errorf("tree (-want +got):\n%s", diff)
			}
			// The commit is read once: no new transfer of objects.
			n := srv.Fetches()
			if _, changed, err := g.Fetch(context.Background()); err != nil || changed {
				t.Errorf("second Fetch: changed=%v err=%v", changed, err)
			}
			if srv.Fetches() != n {
				t.Errorf("second Fetch of the same commit transferred objects again")
			}
		})
	}
}

func TestGitHTTPAuth(t *testing.T) {
	t.Parallel()
	const token = "s3cr3t-t0ken"
	const password = "pa55-w0rd"
	repo := gitsynctest.NewRepo(t)
	id := repo.Commit(map[string]string{"a.cue": "x"}, "c")
	repo.Push()
	bearer := gitsynctest.NewHTTPServer(t, repo.Bare, gitsynctest.HTTPOptions{Token: token})
	basic := gitsynctest.NewHTTPServer(t, repo.Bare, gitsynctest.HTTPOptions{Username: "ci", Password: password})
	withUser := func(u, user, pass string) string {
		return strings.Replace(u, "http://", "http://"+user+":"+pass+"@", 1)
	}

	tests := []struct {
		name    string
		cfg     GitConfig
		wantErr bool
	}{
		{name: "bearer token", cfg: GitConfig{URL: bearer.URL, Auth: GitAuth{Token: token}}},
		{name: "basic with token as password", cfg: GitConfig{URL: basic.URL, Auth: GitAuth{Username: "ci", Token: password}}},
		{name: "basic", cfg: GitConfig{URL: basic.URL, Auth: GitAuth{Username: "ci", Password: password}}},
		{name: "credentials in URL", cfg: GitConfig{URL: withUser(basic.URL, "ci", password)}},
		{name: "no credentials", cfg: GitConfig{URL: bearer.URL}, wantErr: true},
		{name: "wrong token", cfg: GitConfig{URL: bearer.URL, Auth: GitAuth{Token: "wrong-" + token}}, wantErr: true},
		{name: "wrong password", cfg: GitConfig{URL: basic.URL, Auth: GitAuth{Username: "ci", Password: "wrong-" + password}}, wantErr: true},
		{name: "wrong password in URL", cfg: GitConfig{URL: withUser(basic.URL, "ci", "wrong-"+password)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, err := NewGit(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if s := g.String(); strings.Contains(s, token) || strings.Contains(s, password) {
				t.Errorf("String() = %q reveals a secret", s)
			}
			rev, _, err := g.Fetch(context.Background())
			if tt.wantErr {
				if err == nil {
					t.Fatal("Fetch succeeded, want an authentication error")
				}
				msg := err.Error()
				t.Logf("error: %s", msg)
				if strings.Contains(msg, token) || strings.Contains(msg, password) {
					t.Errorf("error %q reveals a secret", msg)
				}
				if !strings.Contains(msg, "authentication required") && !strings.Contains(msg, "authorization failed") {
					t.Errorf("error %q does not say authentication failed", msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if rev.ID != id {
				t.Errorf("ID = %s, want %s", rev.ID, id)
			}
		})
	}
}

func TestGitRemoteDownThenRecovers(t *testing.T) {
	t.Parallel()
	repo := gitsynctest.NewRepo(t)
	id1 := repo.Commit(map[string]string{"a.cue": "1"}, "1")
	repo.Push()
	srv := gitsynctest.NewHTTPServer(t, repo.Bare, gitsynctest.HTTPOptions{})
	g, err := NewGit(GitConfig{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if rev, _ := mustFetch(t, g); rev.ID != id1 {
		t.Fatalf("ID = %s, want %s", rev.ID, id1)
	}
	srv.Stop()
	if _, _, err := g.Fetch(context.Background()); err == nil {
		t.Fatal("Fetch with the remote down succeeded")
	}
	id2 := repo.Commit(map[string]string{"a.cue": "2"}, "2")
	repo.Push()
	srv.Start()
	rev, changed := mustFetch(t, g)
	if !changed || rev.ID != id2 {
		t.Fatalf("after recovery: %s changed=%v, want %s changed=true", rev.ID, changed, id2)
	}
}

func TestGitSignedCommits(t *testing.T) {
	t.Parallel()
	allowed := gitsynctest.NewSSHKey(t)
	other := gitsynctest.NewSSHKey(t)
	signers := gitsynctest.AllowedSigners(t, allowed)

	tests := []struct {
		name       string
		commit     func(r *gitsynctest.Repo) string
		verify     VerifyConfig
		wantSigner string
		wantErr    error
	}{
		{
			name: "listed key",
			commit: func(r *gitsynctest.Repo) string {
				return r.CommitSigned(map[string]string{"a.cue": "x"}, "signed", allowed)
			},
			verify:     VerifyConfig{SSHAllowedSignersFile: signers},
			wantSigner: allowed.Fingerprint,
		},
		{
			name:    "unsigned",
			commit:  func(r *gitsynctest.Repo) string { return r.Commit(map[string]string{"a.cue": "x"}, "unsigned") },
			verify:  VerifyConfig{SSHAllowedSignersFile: signers},
			wantErr: ErrUnsigned,
		},
		{
			name: "unlisted key",
			commit: func(r *gitsynctest.Repo) string {
				return r.CommitSigned(map[string]string{"a.cue": "x"}, "signed", other)
			},
			verify:  VerifyConfig{SSHAllowedSignersFile: signers},
			wantErr: ErrUnknownSigner,
		},
		{
			name: "ssh signature with only an openpgp keyring",
			commit: func(r *gitsynctest.Repo) string {
				return r.CommitSigned(map[string]string{"a.cue": "x"}, "signed", allowed)
			},
			verify:  VerifyConfig{OpenPGPKeyringFile: writeTemp(t, "keyring.asc", "")},
			wantErr: ErrUnknownSigner,
		},
		{
			name:   "verification off",
			commit: func(r *gitsynctest.Repo) string { return r.Commit(map[string]string{"a.cue": "x"}, "unsigned") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			repo := gitsynctest.NewRepo(t)
			id := tt.commit(repo)
			repo.Push()
			g, err := NewGit(GitConfig{URL: repo.URL(), Verify: tt.verify})
			if err != nil {
				t.Fatal(err)
			}
			rev, _ := mustFetch(t, g)
			if rev.ID != id || rev.Signer != tt.wantSigner {
				t.Errorf("revision %s signer %q, want %s signer %q", rev.ID, rev.Signer, id, tt.wantSigner)
			}
			if !errors.Is(rev.VerifyErr, tt.wantErr) || (tt.wantErr == nil) != (rev.VerifyErr == nil) {
				t.Errorf("VerifyErr = %v, want %v", rev.VerifyErr, tt.wantErr)
			}
			if _, ok := treeMap(rev.Tree)["a.cue"]; !ok {
				t.Errorf("files: %v, want a.cue", treeMap(rev.Tree))
			}
		})
	}
}

func TestGitOpenPGPSignedCommits(t *testing.T) {
	t.Parallel()
	key := gitsynctest.NewGPGKey(t)
	other := gitsynctest.NewGPGKey(t)
	tests := []struct {
		name       string
		key        *gitsynctest.GPGKey
		wantSigner string
		wantErr    error
	}{
		{name: "listed key", key: key, wantSigner: "OPENPGP:" + key.Fingerprint},
		{name: "unlisted key", key: other, wantErr: ErrUnknownSigner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := gitsynctest.NewRepo(t)
			id := repo.CommitGPGSigned(map[string]string{"a.cue": "x"}, "signed", tt.key)
			repo.Push()
			g, err := NewGit(GitConfig{URL: repo.URL(), Verify: VerifyConfig{OpenPGPKeyringFile: key.KeyringFile}})
			if err != nil {
				t.Fatal(err)
			}
			rev, _ := mustFetch(t, g)
			if rev.ID != id || rev.Signer != tt.wantSigner {
				t.Errorf("revision %s signer %q, want %s signer %q", rev.ID, rev.Signer, id, tt.wantSigner)
			}
			if !errors.Is(rev.VerifyErr, tt.wantErr) || (tt.wantErr == nil) != (rev.VerifyErr == nil) {
				t.Errorf("VerifyErr = %v, want %v", rev.VerifyErr, tt.wantErr)
			}
		})
	}
}

func TestGitSignedCommitTampered(t *testing.T) {
	t.Parallel()
	key := gitsynctest.NewSSHKey(t)
	repo := gitsynctest.NewRepo(t)
	repo.CommitSigned(map[string]string{"a.cue": "x"}, "signed", key)
	// Rewrite the commit message but keep the signature header: the
	// signature no longer covers the payload.
	raw := repo.Git("cat-file", "commit", "HEAD")
	forged := strings.Replace(raw, "\n\nsigned", "\n\nforged", 1)
	p := writeTemp(t, "commit", forged+"\n")
	id := repo.Git("hash-object", "-t", "commit", "-w", p)
	repo.Git("update-ref", "refs/heads/main", id)
	repo.ForcePush()

	g, err := NewGit(GitConfig{URL: repo.URL(), Verify: VerifyConfig{SSHAllowedSignersFile: gitsynctest.AllowedSigners(t, key)}})
	if err != nil {
		t.Fatal(err)
	}
	rev, _ := mustFetch(t, g)
	if rev.ID != id || !errors.Is(rev.VerifyErr, ErrUnknownSigner) || rev.Signer != "" {
		t.Errorf("forged commit %s: VerifyErr = %v, Signer %q; want %s rejected", rev.ID, rev.VerifyErr, rev.Signer, id)
	}
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSSHKnownHosts(t *testing.T) {
	t.Parallel()
	host := gitsynctest.NewSSHKey(t)
	client := gitsynctest.NewSSHKey(t)
	stranger := gitsynctest.NewSSHKey(t)
	key, err := os.ReadFile(client.PrivateFile)
	if err != nil {
		t.Fatal(err)
	}
	kh := writeTemp(t, "known_hosts", "[127.0.0.1]:2222 "+host.Public+"\n")
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2222}

	pk, err := sshAuth("git", key, "", kh, "127.0.0.1:2222")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{ssh.KeyAlgoED25519}, pk.HostKeyAlgorithms); diff != "" {
		t.Errorf("host key algorithms (-want +got):\n%s", diff)
	}
	if err := pk.HostKeyCallback("127.0.0.1:2222", addr, host.Signer.PublicKey()); err != nil {
		t.Errorf("listed host key refused: %v", err)
	}
	err = pk.HostKeyCallback("127.0.0.1:2222", addr, stranger.Signer.PublicKey())
	if !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), kh) {
		t.Errorf("changed host key: %v, want ErrHostKeyMismatch naming %s", err, kh)
	}
	other := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2223}
	err = pk.HostKeyCallback("127.0.0.1:2223", other, host.Signer.PublicKey())
	t.Logf("unknown host: %v", err)
	if !errors.Is(err, ErrUnknownHost) || !strings.Contains(err.Error(), kh) {
		t.Errorf("unknown host: %v, want ErrUnknownHost naming %s", err, kh)
	}

	tests := []struct {
		name string
		cfg  GitConfig
		want string
	}{
		{name: "no known_hosts", cfg: GitConfig{URL: "ssh://git@127.0.0.1:2222/r.git", Auth: GitAuth{SSHKey: key}}, want: "known_hosts"},
		{name: "missing known_hosts", cfg: GitConfig{URL: "git@127.0.0.1:r.git", Auth: GitAuth{SSHKey: key, KnownHostsFile: kh + ".missing"}}, want: "no such file"},
		{name: "no key", cfg: GitConfig{URL: "ssh://git@127.0.0.1:2222/r.git", Auth: GitAuth{KnownHostsFile: kh}}, want: "ssh key"},
		{name: "bad key", cfg: GitConfig{URL: "ssh://git@127.0.0.1:2222/r.git", Auth: GitAuth{SSHKey: []byte("junk"), KnownHostsFile: kh}}, want: "invalid key"},
		{name: "unsupported scheme", cfg: GitConfig{URL: "ftp://example.com/r.git"}, want: "unsupported"},
		{name: "token over plain http", cfg: GitConfig{URL: "http://git.example.com/r.git", Auth: GitAuth{Token: "t0ken"}}, want: "plain http"},
		{name: "password in plain http URL", cfg: GitConfig{URL: "http://u:pw@git.example.com/r.git"}, want: "plain http"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewGit(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewGit error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := NewGit(GitConfig{URL: "ssh://git@127.0.0.1:2222/r.git", Auth: GitAuth{SSHKeyFile: client.PrivateFile, KnownHostsFile: kh}}); err != nil {
		t.Errorf("NewGit with a key file and known_hosts: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"password", "https://user:secret@example.com/r.git", "https://user:xxxxx@example.com/r.git"},
		{"token as user", "https://ghp_secret@example.com/r.git", "https://xxxxx@example.com/r.git"},
		{"plain", "https://example.com/r.git", "https://example.com/r.git"},
		{"scp-like", "git@example.com:org/r.git", "git@example.com:org/r.git"},
		{"ssh user", "ssh://git@example.com/r.git", "ssh://git@example.com/r.git"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redactURL(tt.in); got != tt.want {
				t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestGitSSH(t *testing.T) {
	t.Parallel()
	repo := gitsynctest.NewRepo(t)
	id := repo.Commit(map[string]string{"policy/a.cue": "x"}, "c")
	repo.Push()
	host := gitsynctest.NewSSHKey(t)
	client := gitsynctest.NewSSHKey(t)
	stranger := gitsynctest.NewSSHKey(t)
	srv := gitsynctest.ServeSSH(t, repo.Bare, host, client)
	url := srv.URL(filepath.Base(repo.Bare))
	known := writeTemp(t, "known_hosts", srv.KnownHostsLine+"\n")
	wrong := writeTemp(t, "known_hosts", strings.Replace(srv.KnownHostsLine, strings.Fields(host.Public)[1], strings.Fields(stranger.Public)[1], 1)+"\n")
	other := writeTemp(t, "known_hosts", "[192.0.2.1]:22 "+host.Public+"\n")

	tests := []struct {
		name      string
		key       *gitsynctest.SSHKey
		known     string
		wantInErr []string
		wantIs    error
	}{
		{name: "ok", key: client, known: known},
		{name: "unknown host", key: client, known: other, wantInErr: []string{"not in known_hosts", other}, wantIs: ErrUnknownHost},
		{name: "changed host key", key: client, known: wrong, wantInErr: []string{"does not match", wrong}, wantIs: ErrHostKeyMismatch},
		{name: "unauthorized client key", key: stranger, known: known, wantInErr: []string{"unable to authenticate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, err := NewGit(GitConfig{URL: url, Path: "policy", Auth: GitAuth{SSHKeyFile: tt.key.PrivateFile, KnownHostsFile: tt.known}})
			if err != nil {
				t.Fatal(err)
			}
			rev, _, err := g.Fetch(context.Background())
			if len(tt.wantInErr) == 0 {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if rev.ID != id || treeMap(rev.Tree)["a.cue"] != "x" {
					t.Errorf("revision %s files %v, want %s", rev.ID, treeMap(rev.Tree), id)
				}
				return
			}
			if err == nil {
				t.Fatal("Fetch succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			for _, w := range tt.wantInErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
