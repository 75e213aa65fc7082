// Package update replaces the running agent with the build the server
// announces, when a check-in asks for it.
//
// The sequence (Apply):
//  1. skip when the announced version is the running one (a circuit breaker
//     against exec loops); refuse a build for another platform
//     (ErrWrongPlatform), a version older than the running one or that
//     cannot be ordered against it (ErrDowngrade) unless the check-in
//     allowed a downgrade, and a file that already is the announced build
//     under another version stamp;
//  2. when a signing key was pinned at registration, require a signature and
//     verify it over the build's statement (agentbuild.Statement: version,
//     this agent's OS and arch, digest), so that an old build or another
//     platform's, however validly signed, is refused (a server that later
//     serves another key is reported with ErrSigningKeyChanged). With no key
//     pinned and a signed build, fetch the server's key over mTLS, verify
//     with it, and pin it (PinSigningKey): a signed build is never installed
//     unverified;
//  3. download over the envoy's mTLS client into a temporary file beside the
//     binary, with a size limit, hashing while writing; refuse a digest
//     mismatch;
//  4. fsync, keep the current binary as <binary>.previous, rename the new one
//     over the binary, fsync the folder;
//  5. exec the new binary with the same arguments (injectable); when exec
//     fails, the previous binary is put back.
package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vigo-enroll/vigo/schemas/agentbuild"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

// DefaultMaxSize bounds a download when Updater.MaxSize is zero.
const DefaultMaxSize = 256 << 20

// PreviousSuffix is appended to the binary's path to keep the previous build.
const PreviousSuffix = ".previous"

// ExecFunc replaces the current process with path (argv, env). It returns
// only on failure; test doubles return nil to say "restarted".
type ExecFunc func(path string, argv, env []string) error

// Updater updates one agent binary. The zero values of the optional fields
// are sensible defaults.
type Updater struct {
	// CurrentVersion is the running agent's version (required).
	CurrentVersion string
	// BinaryPath is the absolute path of the running binary (required).
	BinaryPath string
	// Client is the envoy's mTLS HTTP client (required).
	Client *http.Client
	// ServerURL is the server's HTTPS base URL, e.g. https://vigo.example.com:8443 (required).
	ServerURL string
	// SigningKey is the offline signing key pinned at registration; nil when
	// the server had none then (unsigned builds are then checked by SHA-256
	// only; a signed one makes Apply fetch the server's key, see
	// PinSigningKey).
	SigningKey ed25519.PublicKey
	// PinSigningKey saves the signing key that Apply fetched from the
	// server (over the envoy's mTLS client) because none was pinned and
	// the build is signed; it is called once the build's signature
	// verified with that key, before the download, so that every later
	// build must be signed by the same key. nil: the key serves this
	// update only. An error stops the update.
	PinSigningKey func(ed25519.PublicKey) error
	// Exec restarts into the new binary; nil uses execve on Unix and returns
	// ErrRestartRequired on Windows.
	Exec ExecFunc
	// Args are the arguments to exec with; nil means os.Args.
	Args []string
	// Logger receives progress; nil discards logs.
	Logger *slog.Logger
	// MaxSize bounds the download; 0 means DefaultMaxSize.
	MaxSize int64
	// GOOS and GOARCH select the build; "" means the running platform.
	GOOS, GOARCH string
}

func (u *Updater) log() *slog.Logger {
	if u.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return u.Logger.With("component", "update")
}

func (u *Updater) platform() (string, string) {
	goos, arch := u.GOOS, u.GOARCH
	if goos == "" {
		goos = runtime.GOOS
	}
	if arch == "" {
		arch = runtime.GOARCH
	}
	return goos, arch
}

func (u *Updater) check() error {
	switch {
	case u.CurrentVersion == "":
		return errors.New("update agent: current version is unknown")
	case u.BinaryPath == "" || !filepath.IsAbs(u.BinaryPath):
		return fmt.Errorf("update agent: binary path %q is not absolute", u.BinaryPath)
	case u.Client == nil:
		return errors.New("update agent: no HTTP client")
	case u.ServerURL == "":
		return errors.New("update agent: no server URL")
	}
	return nil
}

// Want is what a check-in asks of the updater (an ACTION_TYPE_UPDATE).
type Want struct {
	// Version to install; "" means the one the server serves.
	Version string
	// SHA256 announced by the check-in (hex); "" skips that comparison.
	SHA256 string
	// AllowDowngrade is the operator's consent to a version older than
	// the running one, or one that cannot be ordered against it.
	AllowDowngrade bool
}

// Update handles a check-in that asks for want: it skips when the agent
// runs that version already, asks the server which build it serves, and
// applies it. Its signature fits agent.Config.Update.
func (u *Updater) Update(ctx context.Context, want Want) error {
	if err := u.check(); err != nil {
		return err
	}
	version := want.Version
	if version == u.CurrentVersion {
		return nil
	}
	latest, err := u.Latest(ctx)
	if err != nil {
		return err
	}
	if version != "" && latest.Version != version {
		return fmt.Errorf("update agent to %s: server serves %s: %w", version, latest.Version, ErrVersionUnavailable)
	}
	if want.SHA256 != "" && !strings.EqualFold(want.SHA256, latest.SHA256) {
		return fmt.Errorf("update agent to %s: check-in announced sha256 %s, server serves %s: %w", version, want.SHA256, latest.SHA256, ErrVersionUnavailable)
	}
	return u.Apply(ctx, latest, want.AllowDowngrade)
}

// Latest asks the server which build it serves for this platform.
func (u *Updater) Latest(ctx context.Context) (apiv1.AgentLatest, error) {
	goos, arch := u.platform()
	q := url.Values{"os": {goos}, "arch": {arch}}
	var l apiv1.AgentLatest
	body, err := u.get(ctx, "/api/v1/agent/latest?"+q.Encode(), 64<<10)
	if err != nil {
		return l, fmt.Errorf("fetch latest agent: %w", err)
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return l, fmt.Errorf("fetch latest agent: %w", err)
	}
	return l, nil
}

// Apply installs want and restarts into it; see the package comment. It
// returns nil without doing anything when want.Version is the running one.
// allowDowngrade is the operator's consent to an older version (or one
// that cannot be ordered against the running one).
func (u *Updater) Apply(ctx context.Context, want apiv1.AgentLatest, allowDowngrade bool) error {
	if err := u.check(); err != nil {
		return err
	}
	log := u.log()
	if want.Version == u.CurrentVersion {
		log.Debug("agent already runs the announced version", "version", want.Version)
		return nil
	}
	op := fmt.Sprintf("update agent %s to %s", u.CurrentVersion, want.Version)
	goos, arch := u.platform()
	if want.OS != goos || want.Arch != arch {
		return fmt.Errorf("%s: build is for %q/%q, not %s/%s: %w", op, want.OS, want.Arch, goos, arch, ErrWrongPlatform)
	}
	digest, err := hex.DecodeString(want.SHA256)
	if err != nil || len(digest) != sha256.Size {
		return fmt.Errorf("%s: invalid sha256 %q", op, want.SHA256)
	}
	maxSize := u.MaxSize
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	if want.Size <= 0 || want.Size > maxSize {
		return fmt.Errorf("%s: size %d out of range (1..%d)", op, want.Size, maxSize)
	}

	// A version older than the running one may bring back fixed bugs: only
	// the operator's explicit consent allows it. Versions that cannot be
	// ordered (not semantic versions) count as a possible downgrade.
	switch c, ok := agentbuild.CompareVersions(want.Version, u.CurrentVersion); {
	case ok && c >= 0:
	case allowDowngrade:
		log.Warn("installing an agent version that is older than the running one or cannot be ordered against it: the operator allowed it",
			"version", want.Version, "running", u.CurrentVersion)
	case ok:
		return fmt.Errorf("%s: %s is older than the running version: %w", op, want.Version, ErrDowngrade)
	default:
		return fmt.Errorf("%s: %q and %q are not both semantic versions, so this may be a downgrade: %w", op, want.Version, u.CurrentVersion, ErrDowngrade)
	}

	// Circuit breaker: the announced bytes are already installed, so
	// installing them again would exec the same build that reports the
	// same (other) version, and the next check-in would start over.
	if cur, err := hashFile(u.BinaryPath); err == nil && bytes.Equal(cur, digest) {
		return fmt.Errorf("%s: %w", op, ErrAlreadyInstalled)
	}

	// The signature covers the version, this agent's platform and the
	// digest, so check it before downloading; the download is then bound
	// to that digest.
	key, fetched := u.SigningKey, false
	if key == nil && want.Signature != "" {
		// Signed, but nothing pinned at registration (the server had no
		// key then): trust the key the enrolled server serves now, over
		// the envoy's mTLS connection, and pin it once it verifies.
		served, err := u.servedSigningKey(ctx)
		if err != nil {
			return fmt.Errorf("%s: the build is signed and no signing key was pinned at registration; fetch the server's: %w", op, err)
		}
		key, fetched = served, true
	}
	if key != nil {
		if want.Signature == "" {
			return fmt.Errorf("%s: %w", op, ErrUnsigned)
		}
		build := agentbuild.Build{Version: want.Version, OS: goos, Arch: arch, SHA256: want.SHA256}
		if !agentbuild.Verify(key, build, want.Signature) {
			if !fetched {
				if served, ferr := u.servedSigningKey(ctx); ferr == nil && !served.Equal(key) {
					return fmt.Errorf("%s: %w", op, ErrSigningKeyChanged)
				}
			}
			return fmt.Errorf("%s: %w", op, ErrBadSignature)
		}
		if fetched {
			if u.PinSigningKey != nil {
				if err := u.PinSigningKey(key); err != nil {
					return fmt.Errorf("%s: pin the signing key: %w", op, err)
				}
			}
			log.Info("pinned the agent signing key the server serves: later builds must be signed by it", "version", want.Version)
		}
	}

	tmp, err := u.download(ctx, want, digest)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer os.Remove(tmp) // no-op once renamed
	prev, err := replace(u.BinaryPath, tmp)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	log.Info("agent binary replaced, restarting", "version", want.Version, "previous", prev)

	args := u.Args
	if args == nil {
		args = os.Args
	}
	exec := u.Exec
	if exec == nil {
		exec = defaultExec
	}
	if err := exec(u.BinaryPath, args, os.Environ()); err != nil {
		if errors.Is(err, ErrRestartRequired) {
			return err
		}
		// The new binary did not start: put the previous one back.
		if rerr := Rollback(u.BinaryPath); rerr != nil {
			return fmt.Errorf("%s: exec: %w (rollback: %v)", op, err, rerr)
		}
		return fmt.Errorf("%s: exec: %w (previous binary restored)", op, err)
	}
	return nil
}

// download writes the build into a temporary file beside the binary and
// returns its path once its size and digest match.
func (u *Updater) download(ctx context.Context, want apiv1.AgentLatest, digest []byte) (string, error) {
	goos, arch := u.platform()
	path := want.URL
	if path == "" {
		path = "/api/v1/agent/download/" + goos + "/" + arch
	}
	resp, err := u.do(ctx, path)
	if err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()

	mode := fs.FileMode(0o755)
	if fi, err := os.Stat(u.BinaryPath); err == nil {
		mode = fi.Mode().Perm() | 0o100
	}
	f, err := os.CreateTemp(filepath.Dir(u.BinaryPath), "."+filepath.Base(u.BinaryPath)+".update-*")
	if err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(resp.Body, want.Size+1))
	if err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	if n != want.Size {
		return "", fmt.Errorf("download: got %d bytes, want %d: %w", n, want.Size, ErrChecksumMismatch)
	}
	if got := h.Sum(nil); !bytes.Equal(got, digest) {
		return "", fmt.Errorf("download: sha256 %x, want %x: %w", got, digest, ErrChecksumMismatch)
	}
	if err := f.Chmod(mode); err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	ok = true
	return f.Name(), nil
}

// replace keeps the current binary as binary.previous and renames tmp over
// binary. On Unix the previous build is a hard link, so the binary's path
// never goes missing; Windows cannot replace a running executable, but can
// rename it away first.
func replace(binary, tmp string) (string, error) {
	prev := binary + PreviousSuffix
	if err := os.Remove(prev); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("keep previous binary: %w", err)
	}
	if runtime.GOOS == "windows" {
		if err := os.Rename(binary, prev); err != nil {
			return "", fmt.Errorf("keep previous binary: %w", err)
		}
		if err := os.Rename(tmp, binary); err != nil {
			_ = os.Rename(prev, binary)
			return "", fmt.Errorf("install new binary: %w", err)
		}
		return prev, nil
	}
	if err := os.Link(binary, prev); err != nil {
		if err := copyFile(binary, prev); err != nil {
			return "", fmt.Errorf("keep previous binary: %w", err)
		}
	}
	if err := os.Rename(tmp, binary); err != nil {
		return "", fmt.Errorf("install new binary: %w", err)
	}
	syncDir(filepath.Dir(binary))
	return prev, nil
}

// Rollback puts binary.previous back in place of binary.
func Rollback(binary string) error {
	prev := binary + PreviousSuffix
	if _, err := os.Stat(prev); err != nil {
		return fmt.Errorf("roll back agent: %w", err)
	}
	if runtime.GOOS == "windows" {
		_ = os.Rename(binary, binary+".failed")
	}
	if err := os.Rename(prev, binary); err != nil {
		return fmt.Errorf("roll back agent: %w", err)
	}
	syncDir(filepath.Dir(binary))
	return nil
}

func (u *Updater) servedSigningKey(ctx context.Context) (ed25519.PublicKey, error) {
	body, err := u.get(ctx, "/api/v1/agent/signing-key", 16<<10)
	if err != nil {
		return nil, err
	}
	k, err := pemkey.ParsePublic(body)
	if err != nil {
		return nil, fmt.Errorf("served agent signing key: %w", err)
	}
	return k, nil
}

// do sends a GET for a server-relative path; an absolute URL must point at
// the server itself, so the envoy's certificate goes nowhere else.
func (u *Updater) do(ctx context.Context, path string) (*http.Response, error) {
	base, err := url.Parse(u.ServerURL)
	if err != nil {
		return nil, fmt.Errorf("parse server URL: %w", err)
	}
	ref, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", path, err)
	}
	target := base.ResolveReference(ref)
	if target.Scheme != base.Scheme || target.Host != base.Host {
		return nil, fmt.Errorf("refusing URL %s outside the server %s", target.Redacted(), base.Redacted())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := u.Client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e apiv1.Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("GET %s: %s: %s", target.Path, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("GET %s: %s", target.Path, resp.Status)
	}
	return resp, nil
}

func (u *Updater) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	resp, err := u.do(ctx, path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: answer larger than %d bytes", path, limit)
	}
	return b, nil
}

func hashFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// syncDir makes a rename durable; file systems that cannot sync a folder
// are ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
