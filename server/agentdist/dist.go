// Package agentdist serves the agent binaries built by "make dist": the
// manifest of builds (GET /api/v1/agent/latest), the binaries
// (GET /api/v1/agent/download/{os}/{arch}) and the public key of the offline
// signing key (GET /api/v1/agent/signing-key).
//
// The folder holds binaries named vigo-<os>-<arch>[.exe] and manifest.json
// (see Manifest). Every file listed is hashed at load (results cached by
// size and modification time), so a binary replaced without a new manifest
// is never served under a stale digest. The folder is reloaded when the
// manifest, the signing key file or a served binary changes (checked on
// each request with a stat), or on Reload. A reload that fails keeps the
// last good state.
//
// The package also holds the offline tooling behind "vigocli dist":
// BuildManifest, WriteKeyPair and SignDir.
package agentdist

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigo-enroll/vigo/schemas/agentbuild"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

// DownloadPath is the route prefix of downloads; AgentLatest.URL is
// DownloadPath + "{os}/{arch}".
const DownloadPath = "/api/v1/agent/download/"

// Config configures a Dist.
type Config struct {
	// Dir is the distribution folder; "" means "dist".
	Dir string
	// Logger receives reload results; nil discards logs.
	Logger *slog.Logger
	// SigningKeyFile is a PEM "PUBLIC KEY" file of the offline signing key.
	// "" takes the key from the manifest's signing_key, if any.
	SigningKeyFile string
}

// Dist serves one distribution folder. It is safe for concurrent use.
type Dist struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex // serialises reloads; readers use state
	state atomic.Pointer[state]
	hash  map[string]hashed // cache of file digests, guarded by mu
}

type state struct {
	builds     map[string]build // "os/arch"
	available  []string         // sorted "os/arch"
	signingKey ed25519.PublicKey
	signingPEM []byte
	stamps     map[string]stamp // files whose change triggers a reload
}

type build struct {
	latest  apiv1.AgentLatest
	path    string
	modTime time.Time
}

type stamp struct {
	size    int64
	modTime time.Time
	exists  bool
}

type hashed struct {
	stamp
	sum string
}

// New loads the folder. A missing folder or manifest is not an error (the
// server then serves no builds and says so); an invalid manifest or an
// unreadable signing key file is.
func New(cfg Config) (*Dist, error) {
	if cfg.Dir == "" {
		cfg.Dir = "dist"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dist{cfg: cfg, log: log.With("component", "agentdist"), hash: map[string]hashed{}}
	if err := d.Reload(); err != nil {
		return nil, err
	}
	return d, nil
}

// Reload re-reads the folder. On error the previous state stays in use.
func (d *Dist) Reload() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reloadLocked()
}

func (d *Dist) reloadLocked() error {
	st := &state{builds: map[string]build{}, stamps: map[string]stamp{}}
	manifestPath := filepath.Join(d.cfg.Dir, ManifestName)
	st.stamps[manifestPath] = statStamp(manifestPath)
	m, err := ReadManifest(d.cfg.Dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		m = &Manifest{}
	case err != nil:
		return fmt.Errorf("load agent distribution: %w", err)
	}

	switch {
	case d.cfg.SigningKeyFile != "":
		st.stamps[d.cfg.SigningKeyFile] = statStamp(d.cfg.SigningKeyFile)
		data, err := os.ReadFile(d.cfg.SigningKeyFile)
		if err != nil {
			return fmt.Errorf("load agent signing key: %w", err)
		}
		if st.signingKey, err = pemkey.ParsePublic(data); err != nil {
			return fmt.Errorf("load agent signing key %s: %w", d.cfg.SigningKeyFile, err)
		}
	case m.SigningKey != "":
		if st.signingKey, err = pemkey.ParsePublic([]byte(m.SigningKey)); err != nil {
			return fmt.Errorf("load agent distribution: manifest signing_key: %w", err)
		}
	}
	if st.signingKey != nil {
		st.signingPEM = pemkey.MarshalPublic(st.signingKey)
	}

	for _, f := range m.Files {
		path := filepath.Join(d.cfg.Dir, f.File)
		s := statStamp(path)
		st.stamps[path] = s
		sum, err := d.digest(path, s)
		if err != nil {
			d.log.Error("agent build not served", "file", f.File, "err", err)
			continue
		}
		if sum != f.SHA256 || s.size != f.Size {
			d.log.Error("agent build not served: file does not match the manifest (run vigocli dist manifest)", "file", f.File)
			continue
		}
		l := apiv1.AgentLatest{OS: f.OS, Arch: f.Arch, Version: f.Version, SHA256: f.SHA256, Size: f.Size,
			URL: DownloadPath + f.OS + "/" + f.Arch}
		if f.Signature != "" {
			switch {
			case st.signingKey == nil:
				d.log.Error("agent build signature not served: no signing key configured or in the manifest", "file", f.File)
			case !agentbuild.Verify(st.signingKey, f.Build(), f.Signature):
				// Serving it would only make every pinned envoy refuse the
				// update. A signature made before issue 12 covered the digest
				// only: such builds must be signed again.
				d.log.Error("agent build signature not served: it does not verify with the signing key over the build's version, OS, arch and digest (run vigocli dist sign again)", "file", f.File, "version", f.Version)
			default:
				l.Signature = f.Signature
			}
		}
		k := f.OS + "/" + f.Arch
		st.builds[k] = build{latest: l, path: path, modTime: s.modTime}
		st.available = append(st.available, k)
	}
	slices.Sort(st.available)
	d.state.Store(st)
	d.log.Info("agent distribution loaded", "dir", d.cfg.Dir, "builds", len(st.available), "signed", st.signingKey != nil)
	if len(st.available) == 0 {
		// The bootstrap script cannot install anything: say where the
		// builds are expected (the HTTP answer does not show server paths).
		d.log.Warn("no agent builds: the bootstrap one-liner will fail until there are; `make dist` writes them to ./dist, copy them into this folder (or set agent.dist_dir), then send SIGHUP", "dir", d.cfg.Dir)
	}
	return nil
}

// digest returns a file's SHA-256, from the cache when its size and
// modification time did not change.
func (d *Dist) digest(path string, s stamp) (string, error) {
	if !s.exists {
		return "", fmt.Errorf("hash %s: %w", path, fs.ErrNotExist)
	}
	if h, ok := d.hash[path]; ok && h.stamp == s {
		return h.sum, nil
	}
	sum, _, err := hashFile(path)
	if err != nil {
		return "", err
	}
	d.hash[path] = hashed{stamp: s, sum: sum}
	return sum, nil
}

func statStamp(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	return stamp{size: fi.Size(), modTime: fi.ModTime(), exists: true}
}

// current returns the state, reloading first when a watched file changed.
func (d *Dist) current() *state {
	st := d.state.Load()
	changed := false
	for p, s := range st.stamps {
		if statStamp(p) != s {
			changed = true
			break
		}
	}
	if changed {
		d.mu.Lock()
		if d.state.Load() == st { // nobody reloaded meanwhile
			if err := d.reloadLocked(); err != nil {
				d.log.Error("reload agent distribution", "err", err)
				// Keep serving the last good state; do not retry on every request
				// until the files change again.
				st2 := *st
				st2.stamps = map[string]stamp{}
				for p := range st.stamps {
					st2.stamps[p] = statStamp(p)
				}
				d.state.Store(&st2)
			}
		}
		d.mu.Unlock()
		st = d.state.Load()
	}
	return st
}

// Latest returns the build served for os/arch.
func (d *Dist) Latest(goos, arch string) (apiv1.AgentLatest, bool) {
	b, ok := d.current().builds[goos+"/"+arch]
	return b.latest, ok
}

// Available lists the served builds as sorted "os/arch" strings.
func (d *Dist) Available() []string {
	return slices.Clone(d.current().available)
}

// SigningKey returns the public signing key, or nil when builds are unsigned.
func (d *Dist) SigningKey() ed25519.PublicKey {
	return d.current().signingKey
}

// SigningKeyPEM returns the public signing key as PEM, or nil. The
// registration answer carries it so that envoys pin it.
func (d *Dist) SigningKeyPEM() []byte {
	return bytes.Clone(d.current().signingPEM)
}

func (st *state) notFound(goos, arch string) string {
	if !platformRe.MatchString(goos) || !platformRe.MatchString(arch) {
		goos, arch = "?", "?" // do not echo arbitrary input
	}
	if len(st.available) == 0 {
		return fmt.Sprintf("no agent build for %s/%s; this server serves no agent builds yet (its operator has to put them in its agent.dist_dir, e.g. from make dist: see the server's log)", goos, arch)
	}
	return fmt.Sprintf("no agent build for %s/%s; available: %s", goos, arch, strings.Join(st.available, ", "))
}

// HandleLatest serves GET (and HEAD) /api/v1/agent/latest?os=&arch=.
func (d *Dist) HandleLatest(w http.ResponseWriter, r *http.Request) {
	goos, arch := r.URL.Query().Get("os"), r.URL.Query().Get("arch")
	if goos == "" || arch == "" {
		writeError(w, http.StatusBadRequest, "the os and arch query parameters are required")
		return
	}
	st := d.current()
	b, ok := st.builds[goos+"/"+arch]
	if !ok {
		writeError(w, http.StatusNotFound, st.notFound(goos, arch))
		return
	}
	body, err := json.Marshal(b.latest)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	body = append(body, '\n')
	h := w.Header()
	// The answer changes whenever a new build is published: caches may keep
	// it but must revalidate, which the ETag makes cheap.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", etag(body))
	h.Set("Content-Type", "application/json")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// HandleDownload serves GET (and HEAD) /api/v1/agent/download/{os}/{arch}:
// the binary, with its digest as ETag, range requests and conditional
// requests.
func (d *Dist) HandleDownload(w http.ResponseWriter, r *http.Request) {
	goos, arch := r.PathValue("os"), r.PathValue("arch")
	st := d.current()
	b, ok := st.builds[goos+"/"+arch]
	if !ok {
		writeError(w, http.StatusNotFound, st.notFound(goos, arch))
		return
	}
	f, err := os.Open(b.path)
	if err != nil {
		d.log.Error("open agent build", "file", b.path, "err", err)
		writeError(w, http.StatusServiceUnavailable, "agent build temporarily unavailable")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() != b.latest.Size || !fi.ModTime().Equal(b.modTime) {
		// Replaced since the last load: the next request reloads and re-hashes it.
		writeError(w, http.StatusServiceUnavailable, "agent build is being replaced; retry")
		return
	}
	name := "vigo"
	if goos == "windows" {
		name = "vigo.exe"
	}
	h := w.Header()
	// The URL names no version, so caches must revalidate; the digest is a
	// strong validator.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", `"`+b.latest.SHA256+`"`)
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Vigo-Version", b.latest.Version)
	h.Set("X-Vigo-Sha256", b.latest.SHA256)
	if b.latest.Signature != "" {
		h.Set("X-Vigo-Signature", b.latest.Signature)
	}
	http.ServeContent(w, r, name, b.modTime, f)
}

// HandleSigningKey serves GET (and HEAD) /api/v1/agent/signing-key: the PEM
// public key of the offline signing key, or 404 when builds are unsigned.
func (d *Dist) HandleSigningKey(w http.ResponseWriter, r *http.Request) {
	st := d.current()
	if st.signingPEM == nil {
		writeError(w, http.StatusNotFound, "agent builds are not signed on this server")
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", etag(st.signingPEM))
	h.Set("Content-Type", "application/x-pem-file")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(st.signingPEM))
}

func etag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(apiv1.Error{Error: msg})
}
