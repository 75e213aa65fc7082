package server

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

// backupManifestName is the first entry of a backup archive.
const backupManifestName = "backup.json"

// BackupInfo describes a backup archive: its manifest, the first entry.
type BackupInfo struct {
	// Format is the archive format version (1).
	Format int `json:"format"`
	// CreatedAt is when the snapshot was taken.
	CreatedAt time.Time `json:"created_at"`
	// Replica is the server.replica of the server backed up.
	Replica string `json:"replica"`
	// Database is "sqlite" (the snapshot is included) or "postgres" (not
	// included: back it up with pg_dump).
	Database string `json:"database"`
	// SchemaVersion is the SQLite snapshot's schema version.
	SchemaVersion int `json:"schema_version,omitempty"`
	// Files are the archive's other entries, in order.
	Files []BackupFile `json:"files"`
}

// BackupFile is one file of a backup.
type BackupFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// backupEntry maps an archive name to where the file lives under a
// configuration, and says whether a backup must have it.
type backupEntry struct {
	name     string
	path     string
	mode     os.FileMode
	required bool
}

func backupEntries(cfg *Config) []backupEntry {
	p := cfg.StatePaths()
	es := []backupEntry{
		{name: "tls/ca", path: p.CACert, mode: 0o644, required: true},
		{name: "tls/ca_key", path: p.CAKey, mode: 0o600, required: true},
		{name: "tls/response_signing_key", path: p.SigningKey, mode: 0o600, required: true},
		{name: "admin.token.sha256", path: p.AdminTokenHash, mode: 0o600, required: true},
		{name: "admin.token.previous.sha256", path: p.AdminTokenPrevious, mode: 0o600},
		// The token itself, for vigocli on the restored host; a server
		// needs only the hash.
		{name: "admin.token", path: p.AdminToken, mode: 0o600},
	}
	if p.Database != "" {
		es = append(es, backupEntry{name: "vigo.db", path: p.Database, mode: 0o600, required: true})
	}
	// The CAs of a CA rotation (the next one, or the one a finished
	// rotation retired), beside the CA files.
	for _, pattern := range []string{filepath.Join(filepath.Dir(p.CACert), "ca-*.pem"), filepath.Join(filepath.Dir(p.CAKey), "ca-*.key")} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			if e, ok := rotationEntry(cfg, "tls/"+filepath.Base(f)); ok {
				es = append(es, e)
			}
		}
	}
	return es
}

// rotationFile matches the archive names of the files of a CA rotation
// (ca.Config.RotationPaths).
var rotationFile = regexp.MustCompile(`^tls/ca-[0-9a-f]{16}\.(pem|key)$`)

// rotationEntry returns the entry of a CA rotation file by its archive
// name.
func rotationEntry(cfg *Config, name string) (backupEntry, bool) {
	m := rotationFile.FindStringSubmatch(name)
	if m == nil {
		return backupEntry{}, false
	}
	p := cfg.StatePaths()
	if m[1] == "key" {
		return backupEntry{name: name, path: filepath.Join(filepath.Dir(p.CAKey), filepath.Base(name)), mode: 0o600}, true
	}
	return backupEntry{name: name, path: filepath.Join(filepath.Dir(p.CACert), filepath.Base(name)), mode: 0o644}, true
}

// Backup writes a consistent snapshot of the server's state to w, a
// gzip-compressed tar archive: a manifest (backup.json), the CA
// certificate and key (with those of a CA rotation beside them), the
// response signing key, the admin token and its
// hash, and, with SQLite, an online snapshot of the database (see
// sqlitestore.Snapshot), taken while a server may be running. With
// PostgreSQL the database is not included: pg_dump it. The archive holds
// the CA key: keep it like the key itself. The server certificate is not
// included: it is re-issued from the CA at start.
func Backup(ctx context.Context, cfg *Config, w io.Writer) (BackupInfo, error) {
	info := BackupInfo{Format: 1, CreatedAt: time.Now().UTC(), Replica: cfg.Server.Replica, Database: cfg.Database.Driver}
	tmp, err := os.MkdirTemp("", "vigo-backup-")
	if err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(tmp)
	type source struct {
		name string
		path string
		mode os.FileMode
	}
	var srcs []source
	for _, e := range backupEntries(cfg) {
		path := e.path
		if e.name == "vigo.db" {
			path = filepath.Join(tmp, "vigo.db")
			if info.SchemaVersion, err = sqlitestore.Snapshot(ctx, e.path, path); err != nil {
				return info, fmt.Errorf("backup: %w", err)
			}
		}
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) && !e.required {
			continue
		}
		if err != nil {
			return info, fmt.Errorf("backup %s: %w (has a server run with this configuration?)", e.name, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return info, fmt.Errorf("backup %s: %w", e.name, err)
		}
		info.Files = append(info.Files, BackupFile{Name: e.name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
		srcs = append(srcs, source{e.name, path, e.mode})
	}
	manifest, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	hdr := func(name string, size int64, mode os.FileMode) *tar.Header {
		return &tar.Header{Name: name, Size: size, Mode: int64(mode), ModTime: info.CreatedAt, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(backupManifestName, int64(len(manifest)), 0o600)); err != nil {
		return info, fmt.Errorf("backup: write archive: %w", err)
	}
	if _, err := tw.Write(manifest); err != nil {
		return info, fmt.Errorf("backup: write archive: %w", err)
	}
	for i, s := range srcs {
		if err := copyIntoTar(tw, hdr(s.name, info.Files[i].Size, s.mode), s.path); err != nil {
			return info, fmt.Errorf("backup %s: %w", s.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return info, fmt.Errorf("backup: write archive: %w", err)
	}
	if err := zw.Close(); err != nil {
		return info, fmt.Errorf("backup: write archive: %w", err)
	}
	return info, nil
}

func copyIntoTar(tw *tar.Writer, h *tar.Header, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	// The size was hashed from this same file, which only this process
	// touches (the snapshot) or nobody rewrites in place (keys are
	// replaced by rename): a different length is an error of tar.
	_, err = io.Copy(tw, f)
	return err
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Force overwrites existing files. Never while a server runs on them.
	Force bool
}

// Restore puts the state of a backup archive (see Backup) where cfg says
// it lives (server.data_dir and the server.tls paths). It refuses to
// overwrite an existing file unless opts.Force, refuses an archive whose
// manifest does not account for every file with its size and SHA-256, and
// writes nothing before every file was read and checked.
func Restore(r io.Reader, cfg *Config, opts RestoreOptions) (BackupInfo, error) {
	var info BackupInfo
	zr, err := gzip.NewReader(r)
	if err != nil {
		return info, fmt.Errorf("restore: not a Vigo backup (gzip): %w", err)
	}
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil || h.Name != backupManifestName || h.Size > 1<<20 {
		return info, fmt.Errorf("restore: not a Vigo backup: the first entry is not %s", backupManifestName)
	}
	if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&info); err != nil {
		return info, fmt.Errorf("restore: read %s: %w", backupManifestName, err)
	}
	if info.Format != 1 {
		return info, fmt.Errorf("restore: backup format %d is not supported (this server reads format 1)", info.Format)
	}
	if info.Database == "postgres" && cfg.Database.Driver != "postgres" || info.Database != "postgres" && cfg.Database.Driver == "postgres" {
		return info, fmt.Errorf("restore: the backup is of a %s server, this configuration uses %s", info.Database, cfg.Database.Driver)
	}
	targets := map[string]backupEntry{}
	for _, e := range backupEntries(cfg) {
		targets[e.name] = e
	}
	want := map[string]BackupFile{}
	for _, f := range info.Files {
		e, ok := targets[f.Name]
		if !ok {
			if e, ok = rotationEntry(cfg, f.Name); ok {
				targets[f.Name] = e
			}
		}
		if !ok {
			return info, fmt.Errorf("restore: the backup holds %q, which this server does not know", f.Name)
		}
		if !opts.Force {
			if _, err := os.Lstat(e.path); !errors.Is(err, fs.ErrNotExist) {
				return info, fmt.Errorf("restore: %s exists: restore into an empty data folder (or pass --force while no server runs)", e.path)
			}
		}
		want[f.Name] = f
	}
	for _, e := range targets {
		if _, ok := want[e.name]; e.required && !ok {
			return info, fmt.Errorf("restore: the backup has no %s", e.name)
		}
	}

	// Stage every file beside its destination, then rename them all.
	staged := map[string]string{}
	defer func() {
		for _, tmp := range staged {
			os.Remove(tmp)
		}
	}()
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return info, fmt.Errorf("restore: read archive: %w", err)
		}
		f, ok := want[h.Name]
		if !ok || h.Typeflag != tar.TypeReg || h.Size != f.Size {
			return info, fmt.Errorf("restore: unexpected archive entry %q", h.Name)
		}
		if _, dup := staged[h.Name]; dup {
			return info, fmt.Errorf("restore: archive entry %q appears twice", h.Name)
		}
		e := targets[h.Name]
		tmp, err := stageFile(e.path, e.mode, io.LimitReader(tr, f.Size), f.SHA256)
		if err != nil {
			return info, fmt.Errorf("restore %s: %w", h.Name, err)
		}
		staged[h.Name] = tmp
	}
	for name := range want {
		if _, ok := staged[name]; !ok {
			return info, fmt.Errorf("restore: the archive lacks %s, which its manifest lists", name)
		}
	}
	for name, tmp := range staged {
		dst := targets[name].path
		if name == "vigo.db" {
			// A write-ahead log left beside the old file belongs to it.
			for _, suffix := range []string{"-wal", "-shm"} {
				if err := os.Remove(dst + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return info, fmt.Errorf("restore: %w", err)
				}
			}
		}
		if err := os.Rename(tmp, dst); err != nil {
			return info, fmt.Errorf("restore %s: %w", name, err)
		}
		delete(staged, name)
	}
	return info, nil
}

// stageFile writes r into a temporary file in dst's folder (created 0700),
// synced, and checks its SHA-256.
func stageFile(dst string, mode os.FileMode, r io.Reader, wantSHA string) (string, error) {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".restore*")
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), r); err != nil {
		return "", err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantSHA {
		return "", fmt.Errorf("SHA-256 %s, the manifest says %s: the archive is damaged", got, wantSHA)
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	ok = true
	return f.Name(), nil
}
