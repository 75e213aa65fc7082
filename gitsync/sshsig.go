package gitsync

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// sshsigNamespace is the namespace git uses when it signs commits and tags.
const sshsigNamespace = "git"

// sshsigMagic starts both the signature blob and the signed data (PROTOCOL.sshsig).
const sshsigMagic = "SSHSIG"

// allowedSigners is a parsed allowed_signers file (ssh-keygen(1) "ALLOWED
// SIGNERS"): the keys that may sign commits, by their SHA256 fingerprint.
type allowedSigners struct {
	keys map[string]ssh.PublicKey
}

// loadAllowedSigners reads an allowed_signers file. Lines with options other
// than namespaces= (cert-authority, valid-after…) are skipped, so that the
// file can never grant more than it says; a namespaces= option that does
// not list "git" excludes the key.
func loadAllowedSigners(file string) (*allowedSigners, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read allowed signers: %w", err)
	}
	as := &allowedSigners{keys: map[string]ssh.PublicKey{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The first field lists principals; the rest is authorized_keys syntax.
		_, rest, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("parse allowed signers %s:%d: missing key", file, n)
		}
		key, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(rest)))
		if err != nil {
			return nil, fmt.Errorf("parse allowed signers %s:%d: %w", file, n, err)
		}
		if !signerOptionsAllowGit(opts) {
			continue
		}
		as.keys[ssh.FingerprintSHA256(key)] = key
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read allowed signers %s: %w", file, err)
	}
	return as, nil
}

func signerOptionsAllowGit(opts []string) bool {
	for _, o := range opts {
		name, val, _ := strings.Cut(o, "=")
		if !strings.EqualFold(name, "namespaces") {
			return false // unsupported option: ignore the line rather than widen it
		}
		ok := false
		for ns := range strings.SplitSeq(strings.Trim(val, `"`), ",") {
			if strings.TrimSpace(ns) == sshsigNamespace {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// isSSHSignature reports whether an armored signature is an SSHSIG one.
func isSSHSignature(sig string) bool {
	return strings.HasPrefix(strings.TrimSpace(sig), "-----BEGIN SSH SIGNATURE-----")
}

// verify checks an armored SSHSIG signature of message in the "git"
// namespace and returns the SHA256 fingerprint of the signing key. The key
// must be listed; ErrUnknownSigner otherwise.
func (as *allowedSigners) verify(armored string, message []byte) (string, error) {
	pub, sig, hashAlg, err := parseSSHSig(armored)
	if err != nil {
		return "", err
	}
	fp := ssh.FingerprintSHA256(pub)
	listed, ok := as.keys[fp]
	if !ok || !bytes.Equal(listed.Marshal(), pub.Marshal()) {
		return "", fmt.Errorf("key %s: %w", fp, ErrUnknownSigner)
	}
	var digest []byte
	switch hashAlg {
	case "sha512":
		h := sha512.Sum512(message)
		digest = h[:]
	case "sha256":
		h := sha256.Sum256(message)
		digest = h[:]
	default:
		return "", fmt.Errorf("ssh signature: unsupported hash %q: %w", hashAlg, ErrUnknownSigner)
	}
	// The signed data: MAGIC, string namespace, string reserved,
	// string hash_algorithm, string H(message).
	signed := []byte(sshsigMagic)
	signed = sshString(signed, []byte(sshsigNamespace))
	signed = sshString(signed, nil) // reserved
	signed = sshString(signed, []byte(hashAlg))
	signed = sshString(signed, digest)
	if err := listed.Verify(signed, sig); err != nil {
		return "", fmt.Errorf("key %s: bad signature: %w", fp, ErrUnknownSigner)
	}
	return fp, nil
}

// parseSSHSig decodes the armored blob:
// MAGIC, uint32 version (1), string publickey, string namespace,
// string reserved, string hash_algorithm, string signature.
func parseSSHSig(armored string) (ssh.PublicKey, *ssh.Signature, string, error) {
	block, _ := pem.Decode([]byte(strings.TrimSpace(armored)))
	if block == nil || block.Type != "SSH SIGNATURE" {
		return nil, nil, "", fmt.Errorf("ssh signature: not armored: %w", ErrUnknownSigner)
	}
	var blob struct {
		Magic     [6]byte
		Version   uint32
		PublicKey []byte
		Namespace string
		Reserved  []byte
		HashAlg   string
		Signature []byte
	}
	if err := ssh.Unmarshal(block.Bytes, &blob); err != nil {
		return nil, nil, "", fmt.Errorf("ssh signature: %v: %w", err, ErrUnknownSigner)
	}
	if string(blob.Magic[:]) != sshsigMagic || blob.Version != 1 {
		return nil, nil, "", fmt.Errorf("ssh signature: bad magic or version: %w", ErrUnknownSigner)
	}
	if blob.Namespace != sshsigNamespace {
		return nil, nil, "", fmt.Errorf("ssh signature: namespace %q, want %q: %w", blob.Namespace, sshsigNamespace, ErrUnknownSigner)
	}
	pub, err := ssh.ParsePublicKey(blob.PublicKey)
	if err != nil {
		return nil, nil, "", fmt.Errorf("ssh signature: public key: %v: %w", err, ErrUnknownSigner)
	}
	sig := new(ssh.Signature)
	if err := ssh.Unmarshal(blob.Signature, sig); err != nil {
		return nil, nil, "", fmt.Errorf("ssh signature: %v: %w", err, ErrUnknownSigner)
	}
	if sig.Format == ssh.KeyAlgoRSA { // ssh-rsa (SHA-1) is refused by ssh-keygen for SSHSIG too
		return nil, nil, "", fmt.Errorf("ssh signature: sha1 rsa signatures are not accepted: %w", ErrUnknownSigner)
	}
	return pub, sig, blob.HashAlg, nil
}

// sshString appends b as an SSH wire "string" (uint32 length, bytes).
func sshString(dst, b []byte) []byte {
	n := len(b)
	dst = append(dst, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	return append(dst, b...)
}
