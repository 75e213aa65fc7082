package agentdist

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/vigo-enroll/vigo/schemas/agentbuild"
	"github.com/vigo-enroll/vigo/schemas/atomicfile"
)

// ManifestName is the manifest's file name inside the distribution folder.
const ManifestName = "manifest.json"

// VersionVar is the linker variable that carries the agent's version
// (go build -ldflags "-X github.com/vigo-enroll/vigo/agent.Version=v1.2.3").
const VersionVar = "github.com/vigo-enroll/vigo/agent.Version"

// Manifest is the content of dist/manifest.json. It is written by
// "vigocli dist manifest" (after make dist or make run) and completed by
// "vigocli dist sign"; the server only reads it.
//
//	{
//	  "signing_key": "-----BEGIN PUBLIC KEY-----\n…",   // set by dist sign
//	  "files": [
//	    {"os": "linux", "arch": "amd64", "file": "vigo-linux-amd64",
//	     "version": "v1.2.3", "sha256": "<64 hex>", "size": 9437184,
//	     "signature": "<base64 Ed25519 signature of agentbuild.Statement(version, os, arch, sha256)>"}
//	  ]
//	}
type Manifest struct {
	// SigningKey is the PEM ("PUBLIC KEY", PKIX Ed25519) of the key that
	// signed the files, when they are signed.
	SigningKey string `json:"signing_key,omitempty"`
	// Files lists one build per os/arch.
	Files []ManifestFile `json:"files"`
}

// ManifestFile describes one agent binary.
type ManifestFile struct {
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	File    string `json:"file"` // base name inside the folder
	Version string `json:"version"`
	SHA256  string `json:"sha256"` // lower-case hex
	Size    int64  `json:"size"`
	// Signature is the base64 Ed25519 signature of the build's statement
	// (agentbuild.Statement: version, os, arch and digest).
	Signature string `json:"signature,omitempty"`
}

// Build returns what f's signature covers.
func (f ManifestFile) Build() agentbuild.Build {
	return agentbuild.Build{Version: f.Version, OS: f.OS, Arch: f.Arch, SHA256: f.SHA256}
}

var (
	// binaryName is the naming convention of make dist: vigo-<os>-<arch>[.exe].
	binaryName = regexp.MustCompile(`^vigo-([a-z0-9]+)-([a-z0-9]+)(\.exe)?$`)
	platformRe = regexp.MustCompile(`^[a-z0-9]{1,16}$`)
	hexSHA256  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	versionRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)
)

// ReadManifest reads and validates dir/manifest.json.
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestName)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", path, err)
	}
	return m, nil
}

// ParseManifest decodes and validates a manifest: one JSON object, no
// unknown fields, nothing after it, every entry valid (Validate).
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the manifest object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks every entry: known shapes of os, arch, version, digest,
// a plain file name, and one entry per os/arch.
func (m *Manifest) Validate() error {
	seen := map[string]bool{}
	for i, f := range m.Files {
		switch {
		case !platformRe.MatchString(f.OS) || !platformRe.MatchString(f.Arch):
			return fmt.Errorf("file %d: invalid os/arch %q/%q", i, f.OS, f.Arch)
		case f.File == "" || f.File != filepath.Base(f.File) || f.File == "." || f.File == ".." || strings.ContainsAny(f.File, `/\`):
			return fmt.Errorf("file %d: file name %q must be a plain name inside the folder", i, f.File)
		case !versionRe.MatchString(f.Version):
			return fmt.Errorf("file %d (%s): invalid version %q", i, f.File, f.Version)
		case !hexSHA256.MatchString(f.SHA256):
			return fmt.Errorf("file %d (%s): sha256 must be 64 lower-case hex digits", i, f.File)
		case f.Size <= 0:
			return fmt.Errorf("file %d (%s): size must be positive", i, f.File)
		}
		k := f.OS + "/" + f.Arch
		if seen[k] {
			return fmt.Errorf("file %d (%s): second entry for %s", i, f.File, k)
		}
		seen[k] = true
	}
	return nil
}

// WriteManifest writes m to dir/manifest.json atomically (temporary file,
// fsync, rename), so a server reading the folder never sees half a manifest.
func WriteManifest(dir string, m *Manifest) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return atomicfile.Write(filepath.Join(dir, ManifestName), append(data, '\n'), 0o644)
}

// BuildManifest scans dir for binaries named vigo-<os>-<arch>[.exe] and
// returns their manifest. Each binary's version is read from its Go build
// information (the -X VersionVar linker flag); version is used for binaries
// built without it, and an error is returned when neither is known. Entries
// of an existing manifest whose digest did not change keep their version and
// signature.
func BuildManifest(dir, version string) (*Manifest, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("build manifest: %w", err)
	}
	old := map[string]ManifestFile{}
	prev, err := ReadManifest(dir)
	switch {
	case err == nil:
		for _, f := range prev.Files {
			old[f.File] = f
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("build manifest: %w", err)
	}
	m := &Manifest{}
	for _, e := range entries {
		match := binaryName.FindStringSubmatch(e.Name())
		if match == nil || !e.Type().IsRegular() {
			continue
		}
		goos, arch := match[1], match[2]
		if (match[3] == ".exe") != (goos == "windows") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		sum, size, err := hashFile(path)
		if err != nil {
			return nil, fmt.Errorf("build manifest: %w", err)
		}
		v := version
		if bi, err := buildinfo.ReadFile(path); err == nil {
			if bv := versionFromBuildInfo(bi); bv != "" {
				v = bv
			}
			if bos, barch := setting(bi, "GOOS"), setting(bi, "GOARCH"); (bos != "" && bos != goos) || (barch != "" && barch != arch) {
				return nil, fmt.Errorf("build manifest: %s was built for %s/%s", e.Name(), bos, barch)
			}
		}
		if v == "" {
			return nil, fmt.Errorf("build manifest: %s carries no version (-X %s) and none was given", e.Name(), VersionVar)
		}
		f := ManifestFile{OS: goos, Arch: arch, File: e.Name(), Version: v, SHA256: sum, Size: size}
		if o, ok := old[f.File]; ok && o.SHA256 == f.SHA256 {
			// The same bytes: keep what the manifest said about them.
			f.Version, f.Signature = o.Version, o.Signature
		}
		m.Files = append(m.Files, f)
	}
	if prev != nil && slices.ContainsFunc(m.Files, func(f ManifestFile) bool { return f.Signature != "" }) {
		m.SigningKey = prev.SigningKey
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("build manifest: %w", err)
	}
	return m, nil
}

func setting(bi *buildinfo.BuildInfo, key string) string {
	for _, s := range bi.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}

// versionFromBuildInfo extracts the value of -X VersionVar=… from the
// recorded -ldflags, unquoting the forms the go command writes.
func versionFromBuildInfo(bi *buildinfo.BuildInfo) string {
	flags := setting(bi, "-ldflags")
	i := strings.Index(flags, VersionVar+"=")
	if i < 0 {
		return ""
	}
	v := flags[i+len(VersionVar)+1:]
	if j := strings.IndexAny(v, " \t'\""); j >= 0 {
		v = v[:j]
	}
	if !versionRe.MatchString(v) {
		return ""
	}
	return v
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
