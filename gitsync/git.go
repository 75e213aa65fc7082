package gitsync

// This is the only file of the project that imports go-git: its types never
// leave it. Everything it hands out is a Revision with an in-memory fs.FS.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/memory"
	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// DefaultGitTimeout bounds each Git network operation when GitConfig.Timeout is zero.
const DefaultGitTimeout = time.Minute

// GitConfig configures a Git remote source.
type GitConfig struct {
	// URL of the repository: https://, http:// (loopback and tests),
	// ssh://, scp-like user@host:path, or file://. Credentials in an
	// http(s) URL are used as basic auth when Auth is empty, and are
	// never printed.
	URL string
	// Ref is the branch to follow ("main" when empty); a value starting
	// with "refs/" is used as a full reference name.
	Ref string
	// Path is the policy folder inside the repository ("" = the root).
	Path string
	// Timeout bounds each Git network operation (DefaultGitTimeout when zero).
	Timeout time.Duration
	// Auth holds the credentials.
	Auth GitAuth
	// Verify enables signed-commit verification when any file is set.
	Verify VerifyConfig
	// Logger receives debug and info logs; nil discards them.
	Logger *slog.Logger
}

// GitAuth holds the credentials of a Git remote. None of them is ever
// written to a log or an error.
type GitAuth struct {
	// Token authenticates over https: sent as "Authorization: Bearer"
	// when Username is empty, else as the basic-auth password of Username
	// (GitHub: Username "x-access-token"; GitLab: "oauth2").
	Token string
	// Username and Password authenticate over https with basic auth.
	Username string
	Password string
	// SSHKeyFile is a PEM/OpenSSH private key file for ssh URLs; SSHKey
	// holds the key itself instead. SSHKeyPassphrase decrypts it.
	SSHKeyFile       string
	SSHKey           []byte
	SSHKeyPassphrase string
	// KnownHostsFile is required for ssh URLs: the server's host key must
	// be listed there, and the host key algorithms offered are those it lists.
	KnownHostsFile string
}

// Verification modes.
const (
	// VerifyHead checks the signature of the head commit only (Flux's
	// default): an unsigned commit is applied when a signed one lands on top.
	VerifyHead = "head"
	// VerifyAll checks every commit between the last verified head and the
	// new head, merged branches included. The first head a process sees is
	// checked alone, unless SetVerifiedBase says where to start.
	VerifyAll = "all"
)

// VerifyConfig lists the keys allowed to sign commits. When both files
// are empty, signatures are not checked. The files are read again when
// they change, without a restart.
type VerifyConfig struct {
	// SSHAllowedSignersFile is an ssh-keygen allowed_signers file.
	SSHAllowedSignersFile string
	// OpenPGPKeyringFile is an armored OpenPGP public keyring.
	OpenPGPKeyringFile string
	// Mode is VerifyHead (when empty) or VerifyAll.
	Mode string
}

func (v VerifyConfig) enabled() bool {
	return v.SSHAllowedSignersFile != "" || v.OpenPGPKeyringFile != ""
}

// Git is a Source that polls a Git remote. Fetch lists the remote's refs
// (a few hundred bytes) and only when the followed ref moved does it fetch
// a shallow, single-branch copy into memory and read the policy folder from
// the commit's tree; no worktree is ever written. A force-pushed branch is
// simply followed: every fetch starts from an empty repository.
type Git struct {
	url     string // without credentials moved into auth
	display string // redacted
	ref     plumbing.ReferenceName
	path    string
	timeout time.Duration
	auth    transport.AuthMethod
	secrets []string
	signers *allowedSigners
	keyring string
	verify  bool
	vcfg    VerifyConfig
	keysAt  string        // the size and time of the key files when last read
	base    plumbing.Hash // VerifyAll: the newest head whose commits were verified
	log     *slog.Logger

	mu      sync.Mutex
	lastRef plumbing.Hash
	last    *Revision
}

var (
	_ Source        = (*Git)(nil)
	_ VerifiedBaser = (*Git)(nil)
)

// NewGit checks cfg and returns a Git source. It does not contact the remote.
func NewGit(cfg GitConfig) (*Git, error) {
	if cfg.URL == "" {
		return nil, errors.New("new git source: empty URL")
	}
	g := &Git{
		url:     cfg.URL,
		timeout: cfg.Timeout,
		log:     cfg.Logger,
		verify:  cfg.Verify.enabled(),
		vcfg:    cfg.Verify,
	}
	switch cfg.Verify.Mode {
	case "", VerifyHead, VerifyAll:
	default:
		return nil, fmt.Errorf("new git source: verify mode %q: must be %s or %s", cfg.Verify.Mode, VerifyHead, VerifyAll)
	}
	if g.timeout <= 0 {
		g.timeout = DefaultGitTimeout
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	ref := cfg.Ref
	if ref == "" {
		ref = "main"
	}
	if strings.HasPrefix(ref, "refs/") {
		g.ref = plumbing.ReferenceName(ref)
	} else {
		g.ref = plumbing.NewBranchReferenceName(ref)
	}
	if p := path.Clean("/" + cfg.Path); p != "/" {
		g.path = p[1:]
	}
	a := cfg.Auth
	g.secrets = nonEmpty(a.Token, a.Password, a.SSHKeyPassphrase)

	ep, err := transport.NewEndpoint(cfg.URL)
	if err != nil {
		// The parse error may quote the URL, credentials included.
		return nil, errors.New("new git source: invalid URL")
	}
	g.secrets = append(g.secrets, nonEmpty(ep.Password)...)
	g.display = redactURL(cfg.URL)
	switch ep.Protocol {
	case "https", "http":
		if u, err := url.Parse(cfg.URL); err == nil && u.User != nil {
			if a.Token == "" && a.Username == "" && a.Password == "" {
				a.Username = u.User.Username()
				a.Password, _ = u.User.Password()
				if a.Password == "" { // a bare token as user name
					g.secrets = append(g.secrets, nonEmpty(a.Username)...)
				}
			}
			u.User = nil
			g.url = u.String()
		}
		if ep.Protocol == "http" && (a.Token != "" || a.Username != "" || a.Password != "") && !isLoopback(ep.Host) {
			// Plain http would hand the credentials to anyone on the path.
			return nil, fmt.Errorf("new git source %s: refusing to send credentials over plain http (use https)", g.display)
		}
		switch {
		case a.Token != "" && a.Username == "":
			g.auth = &githttp.TokenAuth{Token: a.Token}
		case a.Token != "":
			g.auth = &githttp.BasicAuth{Username: a.Username, Password: a.Token}
		case a.Username != "" || a.Password != "":
			g.auth = &githttp.BasicAuth{Username: a.Username, Password: a.Password}
		}
	case "ssh":
		key := a.SSHKey
		if a.SSHKeyFile != "" {
			if key, err = os.ReadFile(a.SSHKeyFile); err != nil {
				return nil, fmt.Errorf("new git source: read ssh key: %w", err)
			}
		}
		if len(key) == 0 {
			return nil, errors.New("new git source: ssh URL needs an ssh key (SSHKeyFile or SSHKey)")
		}
		user := ep.User
		if user == "" {
			user = "git"
		}
		port := ep.Port
		if port == 0 {
			port = 22
		}
		pk, err := sshAuth(user, key, a.SSHKeyPassphrase, a.KnownHostsFile, net.JoinHostPort(ep.Host, fmt.Sprint(port)))
		if err != nil {
			return nil, fmt.Errorf("new git source: %w", err)
		}
		g.auth = pk
	case "file":
	default:
		return nil, fmt.Errorf("new git source: unsupported URL scheme %q", ep.Protocol)
	}

	if err := g.loadKeys(); err != nil {
		return nil, fmt.Errorf("new git source: %w", err)
	}
	return g, nil
}

// loadKeys reads the allowed signers and the keyring when they changed
// since they were last read (size or modification time).
func (g *Git) loadKeys() error {
	if !g.verify {
		return nil
	}
	var stamp strings.Builder
	for _, f := range []string{g.vcfg.SSHAllowedSignersFile, g.vcfg.OpenPGPKeyringFile} {
		if f == "" {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		fmt.Fprintf(&stamp, "%s %d %d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	if stamp.String() == g.keysAt {
		return nil
	}
	var signers *allowedSigners
	if f := g.vcfg.SSHAllowedSignersFile; f != "" {
		var err error
		if signers, err = loadAllowedSigners(f); err != nil {
			return err
		}
	}
	keyring := ""
	if f := g.vcfg.OpenPGPKeyringFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read openpgp keyring: %w", err)
		}
		keyring = string(b)
	}
	if g.keysAt != "" {
		g.log.Info("commit signing keys reloaded")
	}
	g.signers, g.keyring, g.keysAt = signers, keyring, stamp.String()
	// Revisions judged with the old keys are judged again.
	g.lastRef, g.last = plumbing.ZeroHash, nil
	return nil
}

// SetVerifiedBase tells a source in VerifyAll mode the newest commit whose
// history was verified (the active revision after a restart), so that the
// next head is checked from there rather than alone.
func (g *Git) SetVerifiedBase(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if h := plumbing.NewHash(id); !h.IsZero() && h.String() == id {
		g.base = h
	}
}

// sshAuth builds the ssh credentials: the private key, the host key check
// against knownHostsFile, and the host key algorithms listed there for
// hostPort (so that a server with several host keys presents the one we
// know, rather than the first it prefers).
func sshAuth(user string, key []byte, passphrase, knownHostsFile, hostPort string) (*gitssh.PublicKeys, error) {
	if knownHostsFile == "" {
		// Without it the ssh transport would fall back to ~/.ssh/known_hosts
		// or, worse, be configured to accept any key: make it explicit.
		return nil, errors.New("ssh URL needs a known_hosts file (KnownHostsFile)")
	}
	if _, err := os.Stat(knownHostsFile); err != nil {
		return nil, fmt.Errorf("ssh known_hosts: %w", err)
	}
	pk, err := gitssh.NewPublicKeys(user, key, passphrase)
	if err != nil {
		// Never wrap the parse error: it may quote key material.
		return nil, errors.New("parse ssh private key: invalid key or passphrase")
	}
	db, err := gitssh.NewKnownHostsDb(knownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("ssh known_hosts %s: %w", knownHostsFile, err)
	}
	check := db.HostKeyCallback()
	pk.HostKeyCallback = func(host string, remote net.Addr, k ssh.PublicKey) error {
		err := check(host, remote, k)
		var ke *xknownhosts.KeyError
		if errors.As(err, &ke) {
			if len(ke.Want) == 0 {
				return fmt.Errorf("ssh host %s presented %s key %s: %w file %s", host, k.Type(), ssh.FingerprintSHA256(k), ErrUnknownHost, knownHostsFile)
			}
			return fmt.Errorf("ssh host %s presented %s key %s: %w file %s (possible man-in-the-middle)", host, k.Type(), ssh.FingerprintSHA256(k), ErrHostKeyMismatch, knownHostsFile)
		}
		return err
	}
	pk.HostKeyAlgorithms = db.HostKeyAlgorithms(hostPort)
	return pk, nil
}

// String describes the source without credentials.
func (g *Git) String() string {
	s := g.display + "#" + g.ref.Short()
	if g.path != "" {
		s += ":" + g.path
	}
	return s
}

// Fetch implements Source.
func (g *Git) Fetch(ctx context.Context) (Revision, bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	start := time.Now()

	// A key file that changed, or that no longer parses, is noticed at
	// the next fetch: a broken file fails the fetch (it is never skipped,
	// and the old keys are not used on).
	if err := g.loadKeys(); err != nil {
		return Revision{}, false, fmt.Errorf("verify commits of %s: %w", g.display, err)
	}
	head, err := g.listHead(ctx)
	if err != nil {
		return Revision{}, false, err
	}
	if head == g.lastRef && g.last != nil {
		g.log.Debug("git head unchanged", "revision", head.String())
		return *g.last, false, nil
	}
	rev, id, err := g.fetch(ctx)
	if err != nil {
		return Revision{}, false, err
	}
	changed := g.last == nil || g.last.ID != rev.ID
	g.lastRef, g.last = id, &rev
	g.log.Info("git revision fetched", "revision", rev.ID, "changed", changed, "duration", time.Since(start))
	return rev, changed, nil
}

// nonEmpty returns the non-empty strings of ss.
func nonEmpty(ss ...string) (out []string) {
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// listHead asks the remote for its refs (no objects) and returns the hash
// of the followed ref.
func (g *Git) listHead(ctx context.Context) (plumbing.Hash, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	rem := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{g.url}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: g.auth})
	if err != nil {
		return plumbing.ZeroHash, g.errorf("list refs of %s: %w", g.display, err)
	}
	for _, r := range refs {
		if r.Name() == g.ref && r.Type() == plumbing.HashReference {
			return r.Hash(), nil
		}
	}
	return plumbing.ZeroHash, fmt.Errorf("list refs of %s: %s: %w", g.display, g.ref.Short(), ErrRefNotFound)
}

// fetch makes a shallow, single-branch clone into memory and reads the
// revision from it. It returns the commit hash even on content errors.
func (g *Git) fetch(ctx context.Context) (Revision, plumbing.Hash, error) {
	cctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	// VerifyAll needs the history back to the last verified head: the whole
	// branch is fetched (a policy repository is small); otherwise only the
	// head commit.
	depth := 1
	if g.verify && g.vcfg.Mode == VerifyAll && !g.base.IsZero() {
		depth = 0
	}
	repo, err := git.CloneContext(cctx, memory.NewStorage(), nil, &git.CloneOptions{
		URL:           g.url,
		Auth:          g.auth,
		ReferenceName: g.ref,
		SingleBranch:  true,
		Depth:         depth,
		NoCheckout:    true,
		Tags:          git.NoTags,
	})
	if err != nil {
		return Revision{}, plumbing.ZeroHash, g.errorf("fetch %s: %w", g.display, err)
	}
	head, err := repo.Head()
	if err != nil {
		return Revision{}, plumbing.ZeroHash, fmt.Errorf("fetch %s: head: %w", g.display, err)
	}
	id := head.Hash()
	commit, err := repo.CommitObject(id)
	if err != nil {
		return Revision{}, id, fmt.Errorf("read commit %s: %w", id, err)
	}
	tree, err := g.readTree(repo, commit)
	if err != nil {
		return Revision{}, id, fmt.Errorf("read commit %s: %w", id, err)
	}
	subject, _, _ := strings.Cut(strings.TrimSpace(commit.Message), "\n")
	rev := Revision{
		ID:      id.String(),
		Name:    g.ref.Short() + "@sha1:" + id.String(),
		Subject: strings.TrimSpace(subject),
		Tree:    tree,
		Time:    commit.Committer.When,
		Author:  fmt.Sprintf("%s <%s>", commit.Author.Name, commit.Author.Email),
	}
	if g.verify {
		rev.Signer, rev.VerifyErr = g.verifyCommit(commit)
		if rev.VerifyErr == nil && depth == 0 {
			rev.VerifyErr = g.verifyRange(repo, commit)
		}
		if rev.VerifyErr == nil {
			g.base = id
		}
	}
	return rev, id, nil
}

// maxVerifiedCommits bounds the commits verified for one head.
const maxVerifiedCommits = 20000

// verifyRange checks every commit reachable from head and not from the
// last verified head g.base (merged branches included). When g.base is not
// in the history (the branch was rewritten), every commit of the history is
// checked.
func (g *Git) verifyRange(repo *git.Repository, head *object.Commit) error {
	seen := map[plumbing.Hash]bool{}
	if base, err := repo.CommitObject(g.base); err == nil {
		iter := object.NewCommitPreorderIter(base, seen, nil)
		_ = iter.ForEach(func(c *object.Commit) error {
			seen[c.Hash] = true
			return nil
		})
	}
	n := 0
	iter := object.NewCommitPreorderIter(head, seen, nil)
	return iter.ForEach(func(c *object.Commit) error {
		if n++; n > maxVerifiedCommits {
			return fmt.Errorf("more than %d commits since the last verified one: %w", maxVerifiedCommits, ErrUnknownSigner)
		}
		if c.Hash == head.Hash {
			return nil // checked by the caller
		}
		if _, err := g.verifyCommit(c); err != nil {
			subject, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
			return fmt.Errorf("commit %s (%q by %s), before the head, is not verified (verify mode all): %w", c.Hash.String()[:12], subject, c.Author.Email, err)
		}
		return nil
	})
}

// readTree reads the policy folder of commit with the tree rules (see
// ReadDir). Only policy files are read from the object store; the error is
// an error reading the repository, a problem of the content is in
// Tree.Problems.
func (g *Git) readTree(repo *git.Repository, commit *object.Commit) (Tree, error) {
	tree, err := commit.Tree()
	if err != nil {
		return Tree{}, err
	}
	t := &treeReader{}
	if g.path != "" {
		e, err := tree.FindEntry(g.path)
		msg := ""
		switch {
		case err != nil:
			msg = "the policy folder (policy.git.path) does not exist in this commit"
		case e.Mode == filemode.Symlink:
			msg = "the policy folder (policy.git.path) is a symbolic link: it must be a folder"
		case e.Mode == filemode.Submodule:
			msg = "the policy folder (policy.git.path) is a submodule: it must be a folder of this repository"
		case e.Mode != filemode.Dir:
			msg = "the policy folder (policy.git.path) is a file: it must be a folder"
		}
		if msg != "" {
			t.problem(g.path, msg)
			return t.done(), nil
		}
		if tree, err = tree.Tree(g.path); err != nil {
			return Tree{}, fmt.Errorf("%s: %w", g.path, err)
		}
	}
	if err := g.walk(repo, tree, "", t); err != nil {
		return Tree{}, err
	}
	return t.done(), nil
}

// walk applies the tree rules to every entry of tree, whose path in the
// policy folder is dir, entering the folders the rules enter.
func (g *Git) walk(repo *git.Repository, tree *object.Tree, dir string, t *treeReader) error {
	for _, e := range tree.Entries {
		rel := path.Join(dir, e.Name)
		k := kindOther
		switch e.Mode {
		case filemode.Dir:
			k = kindDir
		case filemode.Symlink:
			k = kindSymlink
		case filemode.Submodule:
			k = kindSubmodule
		case filemode.Regular, filemode.Executable, filemode.Deprecated:
			k = kindFile
		}
		hash := e.Hash
		skip, err := t.visit(rel, k, func() (opened, error) {
			blob, err := repo.BlobObject(hash)
			if err != nil {
				return opened{}, err
			}
			r, err := blob.Reader()
			if err != nil {
				return opened{}, err
			}
			return opened{r: r, size: blob.Size}, nil
		})
		if err != nil {
			return err
		}
		if k != kindDir || skip {
			continue
		}
		sub, err := repo.TreeObject(hash)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if err := g.walk(repo, sub, rel, t); err != nil {
			return err
		}
	}
	return nil
}

// verifyCommit checks the head commit's signature against the allowed
// keys. It returns the signer's fingerprint, or the reason for rejection.
func (g *Git) verifyCommit(c *object.Commit) (string, error) {
	sig := c.PGPSignature
	if strings.TrimSpace(sig) == "" {
		return "", ErrUnsigned
	}
	msg := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(msg); err != nil {
		return "", fmt.Errorf("encode commit: %w", err)
	}
	r, err := msg.Reader()
	if err != nil {
		return "", fmt.Errorf("encode commit: %w", err)
	}
	payload, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("encode commit: %w", err)
	}
	if isSSHSignature(sig) {
		if g.signers == nil {
			return "", fmt.Errorf("ssh signature but no allowed signers configured: %w", ErrUnknownSigner)
		}
		return g.signers.verify(sig, payload, c.Committer.When)
	}
	if g.keyring == "" {
		return "", fmt.Errorf("openpgp signature but no keyring configured: %w", ErrUnknownSigner)
	}
	e, err := c.Verify(g.keyring)
	if err != nil || e == nil || e.PrimaryKey == nil {
		return "", fmt.Errorf("openpgp: %v: %w", err, ErrUnknownSigner)
	}
	return fmt.Sprintf("OPENPGP:%X", e.PrimaryKey.Fingerprint), nil
}

// errorf formats like fmt.Errorf and then removes any credential that a
// transport error may have quoted. The error chain stays intact for errors.Is.
func (g *Git) errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	msg := err.Error()
	scrubbed := msg
	for _, s := range g.secrets {
		scrubbed = strings.ReplaceAll(scrubbed, s, "xxxxx")
	}
	if scrubbed == msg {
		return err
	}
	return &redactedError{msg: scrubbed, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redactURL returns raw with any password (or token used as user name in
// an http(s) URL) replaced by "xxxxx".
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || u.Scheme == "" {
		return raw // scp-like user@host:path, no secret there
	}
	if _, ok := u.User.Password(); !ok && (u.Scheme == "http" || u.Scheme == "https") {
		u.User = url.User("xxxxx")
	}
	return u.Redacted()
}
