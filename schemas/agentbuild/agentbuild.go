// Package agentbuild is the contract of a signed agent build, shared by the
// side that signs and serves builds (vigocli dist sign, the server's
// agentdist) and the agent that installs them (agent/update): the
// statement the offline signing key signs, the PEM form of that key, and
// the order of agent versions.
//
// A signature covers the whole statement, not just the binary's digest,
// so a build signed for one version or platform cannot be served as
// another: with only the digest signed, whoever controls a server could
// push any build ever signed, an old vulnerable one or another platform's,
// to every envoy (security review M5). The statement is:
//
//	"vigo-agent-build-v1\n"                 context (domain separation)
//	len(version) version                      4-byte big-endian length, then the bytes
//	len(os) os                                GOOS
//	len(arch) arch                            GOARCH
//	digest                                    the 32 raw bytes of the SHA-256
//
// Other implementations must produce the same bytes.
package agentbuild

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// statementContext starts every statement; it differs from every other
// signed message's context, so that no other signature by any key can be
// taken for a build statement.
const statementContext = "vigo-agent-build-v1\n"

// Build identifies one agent binary, as a manifest lists it.
type Build struct {
	Version string
	OS      string // GOOS
	Arch    string // GOARCH
	SHA256  string // hex, 64 digits
}

// Statement returns the bytes that a build's signature covers (see the
// package comment). It fails only when SHA256 is not 64 hex digits.
func Statement(b Build) ([]byte, error) {
	digest, err := hex.DecodeString(b.SHA256)
	if err != nil || len(digest) != 32 {
		return nil, fmt.Errorf("agent build statement: sha256 %q is not 64 hex digits", b.SHA256)
	}
	out := make([]byte, 0, len(statementContext)+12+len(b.Version)+len(b.OS)+len(b.Arch)+32)
	out = append(out, statementContext...)
	for _, s := range []string{b.Version, b.OS, b.Arch} {
		out = binary.BigEndian.AppendUint32(out, uint32(len(s)))
		out = append(out, s...)
	}
	return append(out, digest...), nil
}

// Sign signs b's statement and returns the signature in standard base64.
func Sign(priv ed25519.PrivateKey, b Build) (string, error) {
	st, err := Statement(b)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(ed25519.Sign(priv, st)), nil
}

// Verify reports whether sigB64 (standard base64) is pub's signature of
// b's statement. Malformed input is reported as false, never a panic.
func Verify(pub ed25519.PublicKey, b Build, sigB64 string) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return false
	}
	st, err := Statement(b)
	if err != nil {
		return false
	}
	return ed25519.Verify(pub, st, sig)
}

// CompareVersions orders two agent versions as semantic versions
// (semver.org 2.0.0, with an optional leading "v"): it returns -1, 0 or +1
// as a is older than, as old as, or newer than b, and ok false when either
// is not a semantic version (such as "dev" or a commit id), in which case
// nothing can be said about their order. Build metadata (+…) does not
// count, as semver says.
func CompareVersions(a, b string) (cmp int, ok bool) {
	va, okA := parseVersion(a)
	vb, okB := parseVersion(b)
	if !okA || !okB {
		return 0, false
	}
	for i := range 3 {
		if c := compareNumeric(va.core[i], vb.core[i]); c != 0 {
			return c, true
		}
	}
	switch {
	case len(va.pre) == 0 && len(vb.pre) == 0:
		return 0, true
	case len(va.pre) == 0:
		return 1, true // a release is newer than its pre-releases
	case len(vb.pre) == 0:
		return -1, true
	}
	for i := 0; i < len(va.pre) && i < len(vb.pre); i++ {
		if c := comparePrerelease(va.pre[i], vb.pre[i]); c != 0 {
			return c, true
		}
	}
	switch {
	case len(va.pre) < len(vb.pre):
		return -1, true
	case len(va.pre) > len(vb.pre):
		return 1, true
	}
	return 0, true
}

type version struct {
	core [3]string // numeric, without leading zeros
	pre  []string
}

// maxVersionLen bounds what is parsed; manifests allow 64 characters.
const maxVersionLen = 128

func parseVersion(s string) (version, bool) {
	var v version
	if len(s) > maxVersionLen {
		return v, false
	}
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		if !identifiers(s[i+1:], false) {
			return v, false
		}
		s = s[:i]
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		pre := s[i+1:]
		if !identifiers(pre, true) {
			return v, false
		}
		v.pre = strings.Split(pre, ".")
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, false
	}
	for i, p := range parts {
		if !numeric(p) {
			return v, false
		}
		v.core[i] = p
	}
	return v, true
}

// identifiers checks a dot-separated list of [0-9A-Za-z-]+ identifiers;
// with noLeadingZero, numeric ones must not start with 0 (pre-release).
func identifiers(s string, noLeadingZero bool) bool {
	if s == "" {
		return false
	}
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return false
		}
		for _, c := range []byte(id) {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
				return false
			}
		}
		if noLeadingZero && allDigits(id) && len(id) > 1 && id[0] == '0' {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func numeric(s string) bool {
	return allDigits(s) && (s == "0" || s[0] != '0')
}

// compareNumeric compares decimal numbers without leading zeros, of any
// length.
func compareNumeric(a, b string) int {
	switch {
	case len(a) != len(b):
		if len(a) < len(b) {
			return -1
		}
		return 1
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func comparePrerelease(a, b string) int {
	na, nb := allDigits(a), allDigits(b)
	switch {
	case na && nb:
		return compareNumeric(a, b)
	case na:
		return -1 // numeric identifiers have lower precedence
	case nb:
		return 1
	}
	return strings.Compare(a, b)
}
