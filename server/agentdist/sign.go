package agentdist

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vigo-enroll/vigo/schemas/agentbuild"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

// GenerateKey creates an Ed25519 signing key pair and returns the private key
// as PEM "PRIVATE KEY" (PKCS #8) and the public key as PEM "PUBLIC KEY"
// (PKIX). rnd nil means crypto/rand.
func GenerateKey(rnd io.Reader) (privPEM, pubPEM []byte, err error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	pub, priv, err := ed25519.GenerateKey(rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("generate signing key: %w", err)
	}
	return pemkey.MarshalPrivate(priv), pemkey.MarshalPublic(pub), nil
}

// WriteKeyPair generates a key pair and writes the private key to path
// (mode 0600) and the public key to path + ".pub". It refuses to overwrite
// either file: losing an offline signing key strands every envoy that pinned it.
func WriteKeyPair(path string, rnd io.Reader) error {
	privPEM, pubPEM, err := GenerateKey(rnd)
	if err != nil {
		return err
	}
	for _, p := range []string{path, path + ".pub"} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("write signing key %s: %w", p, fs.ErrExist)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	if err := writeExclusive(path, privPEM, 0o600); err != nil {
		return err
	}
	if err := writeExclusive(path+".pub", pubPEM, 0o644); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

func writeExclusive(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	return nil
}

// ParsePrivateKey decodes an agent-build signing key: a PEM "PRIVATE KEY"
// (PKCS #8) holding an Ed25519 key. Errors never include the key material.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	k, err := pemkey.ParsePrivate(data)
	if err != nil {
		return nil, fmt.Errorf("parse signing key: %w", err)
	}
	return k, nil
}

// SignDir signs every binary listed in dir/manifest.json with priv: it
// re-hashes each file (a file that no longer matches the manifest is an
// error, nothing is written), signs each build's statement (version, OS,
// arch and digest: agentbuild.Statement), stores the signatures and the
// public key in the manifest and writes it back atomically.
func SignDir(dir string, priv ed25519.PrivateKey) (*Manifest, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", dir, err)
	}
	if len(m.Files) == 0 {
		return nil, fmt.Errorf("sign %s: the manifest lists no files", dir)
	}
	for i := range m.Files {
		f := &m.Files[i]
		sum, size, err := hashFile(filepath.Join(dir, f.File))
		if err != nil {
			return nil, fmt.Errorf("sign %s: %w", dir, err)
		}
		if sum != f.SHA256 || size != f.Size {
			return nil, fmt.Errorf("sign %s: %s changed since the manifest was written (run vigocli dist manifest)", dir, f.File)
		}
		if f.Signature, err = agentbuild.Sign(priv, f.Build()); err != nil {
			return nil, fmt.Errorf("sign %s: %w", dir, err)
		}
	}
	m.SigningKey = string(pemkey.MarshalPublic(priv.Public().(ed25519.PublicKey)))
	if err := WriteManifest(dir, m); err != nil {
		return nil, fmt.Errorf("sign %s: %w", dir, err)
	}
	return m, nil
}

// Verify checks a distribution folder the way the server loads it, but
// strictly: every listed file must exist and match its digest and size, and
// every signature must verify with pubPEM (nil: the manifest's signing_key).
// All problems are reported together.
func Verify(dir string, pubPEM []byte) (*Manifest, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if pubPEM == nil && m.SigningKey != "" {
		pubPEM = []byte(m.SigningKey)
	}
	var pub ed25519.PublicKey
	if pubPEM != nil {
		if pub, err = pemkey.ParsePublic(pubPEM); err != nil {
			return nil, fmt.Errorf("verify %s: signing public key: %w", dir, err)
		}
	}
	var problems []error
	for _, f := range m.Files {
		sum, size, err := hashFile(filepath.Join(dir, f.File))
		switch {
		case err != nil:
			problems = append(problems, err)
			continue
		case sum != f.SHA256 || size != f.Size:
			problems = append(problems, fmt.Errorf("%s does not match the manifest", f.File))
			continue
		}
		switch {
		case f.Signature == "" && pub != nil:
			problems = append(problems, fmt.Errorf("%s is not signed", f.File))
		case f.Signature != "" && pub == nil:
			problems = append(problems, fmt.Errorf("%s is signed but no public key is known", f.File))
		case f.Signature != "" && !agentbuild.Verify(pub, f.Build(), f.Signature):
			problems = append(problems, fmt.Errorf("%s: signature does not verify (signatures cover version, OS, arch and digest since issue 12: run vigocli dist sign again)", f.File))
		}
	}
	if err := errors.Join(problems...); err != nil {
		return m, fmt.Errorf("verify %s:\n%w", dir, err)
	}
	return m, nil
}
