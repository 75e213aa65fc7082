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
	"time"

	"golang.org/x/crypto/ssh"
)

// sshsigNamespace is the namespace git uses when it signs commits and tags.
const sshsigNamespace = "git"

// sshsigMagic starts both the signature blob and the signed data (PROTOCOL.sshsig).
const sshsigMagic = "SSHSIG"

// allowedSigners is a parsed allowed_signers file (ssh-keygen(1) "ALLOWED
// SIGNERS"): the keys that may sign commits, by their SHA256 fingerprint,
// each with the time window in which its signatures count.
type allowedSigners struct {
	keys map[string]allowedKey
}

type allowedKey struct {
	key         ssh.PublicKey
	validAfter  time.Time // zero: no bound
	validBefore time.Time // zero: no bound
}

// loadAllowedSigners reads an allowed_signers file as ssh-keygen reads it:
// "principals [options] keytype key [comment]". The options namespaces=
// (the line applies only when it lists "git"), valid-after= and
// valid-before= (YYYYMMDD[HHMM[SS]], optionally ending in Z for UTC, else
// local time; checked against the commit's committer time, as git asks
// ssh-keygen to) are understood. cert-authority and any other option are
// refused with an error naming the line, never skipped: a file must not
// mean something else than it says.
func loadAllowedSigners(file string) (*allowedSigners, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read allowed signers: %w", err)
	}
	as := &allowedSigners{keys: map[string]allowedKey{}}
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
		ak := allowedKey{key: key}
		applies := true
		for _, o := range opts {
			name, val, _ := strings.Cut(o, "=")
			val = strings.Trim(val, `"`)
			switch strings.ToLower(name) {
			case "namespaces":
				applies = false
				for ns := range strings.SplitSeq(val, ",") {
					applies = applies || strings.TrimSpace(ns) == sshsigNamespace
				}
			case "valid-after", "valid-before":
				t, err := parseSSHTime(val)
				if err != nil {
					return nil, fmt.Errorf("parse allowed signers %s:%d: %s=%q: %w", file, n, name, val, err)
				}
				if strings.EqualFold(name, "valid-after") {
					ak.validAfter = t
				} else {
					ak.validBefore = t
				}
			case "cert-authority":
				return nil, fmt.Errorf("parse allowed signers %s:%d: cert-authority is not supported: list the signers' own keys", file, n)
			default:
				return nil, fmt.Errorf("parse allowed signers %s:%d: unknown option %q (known: namespaces, valid-after, valid-before)", file, n, name)
			}
		}
		if applies {
			as.keys[ssh.FingerprintSHA256(key)] = ak
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read allowed signers %s: %w", file, err)
	}
	return as, nil
}

// parseSSHTime parses an ssh-keygen time: YYYYMMDD, YYYYMMDDHHMM or
// YYYYMMDDHHMMSS, in local time, or UTC with a trailing Z.
func parseSSHTime(s string) (time.Time, error) {
	loc := time.Local
	if v, ok := strings.CutSuffix(s, "Z"); ok {
		s, loc = v, time.UTC
	}
	for _, layout := range []string{"20060102", "200601021504", "20060102150405"} {
		if len(s) == len(layout) {
			return time.ParseInLocation(layout, s, loc)
		}
	}
	return time.Time{}, fmt.Errorf("not a time: write YYYYMMDD[HHMM[SS]][Z]")
}

// isSSHSignature reports whether an armored signature is an SSHSIG one.
func isSSHSignature(sig string) bool {
	return strings.HasPrefix(strings.TrimSpace(sig), "-----BEGIN SSH SIGNATURE-----")
}

// verify checks an armored SSHSIG signature of message in the "git"
// namespace and returns the SHA256 fingerprint of the signing key. The key
// must be listed; ErrUnknownSigner otherwise.
func (as *allowedSigners) verify(armored string, message []byte, at time.Time) (string, error) {
	pub, sig, hashAlg, err := parseSSHSig(armored)
	if err != nil {
		return "", err
	}
	fp := ssh.FingerprintSHA256(pub)
	ak, ok := as.keys[fp]
	if !ok || !bytes.Equal(ak.key.Marshal(), pub.Marshal()) {
		return "", fmt.Errorf("key %s: %w", fp, ErrUnknownSigner)
	}
	switch {
	case !ak.validAfter.IsZero() && at.Before(ak.validAfter):
		return "", fmt.Errorf("key %s is valid only after %s (commit time %s): %w", fp, ak.validAfter.Format(time.RFC3339), at.Format(time.RFC3339), ErrUnknownSigner)
	case !ak.validBefore.IsZero() && !at.Before(ak.validBefore):
		return "", fmt.Errorf("key %s is valid only before %s (commit time %s): %w", fp, ak.validBefore.Format(time.RFC3339), at.Format(time.RFC3339), ErrUnknownSigner)
	}
	listed := ak.key
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
