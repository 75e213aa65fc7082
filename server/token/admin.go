package token

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
)

// AdminPrefix starts every named admin token: va_<id>.<secret>, with the
// id and secret of an enrollment token. (The admin token a server writes at
// its first start is va_ and 52 characters, without a dot.)
const AdminPrefix = "va_"

// Admin tokens are checked at every admin request, so their secrets are
// stored as a SHA-256, not a bcrypt hash: a secret of 160 random bits
// leaves nothing to brute-force, and a slow hash would slow every call.

// AdminString returns the full admin token, secret included: show it once,
// never log it.
func AdminString(t Token) string { return AdminPrefix + t.ID + "." + t.Secret }

// ParseAdmin splits a named admin token into id and secret, checking its
// form strictly; ok is false for anything else (such as the server's own
// admin token).
func ParseAdmin(s string) (t Token, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(s), AdminPrefix)
	if !found {
		return Token{}, false
	}
	id, secret, found := strings.Cut(rest, ".")
	if !found || !ValidID(id) || len(secret) != secretLen || !isBase32(secret) {
		return Token{}, false
	}
	return Token{ID: id, Secret: secret}, true
}

// AdminHash returns the stored form of an admin token's secret.
func AdminHash(t Token) []byte {
	h := sha256.Sum256([]byte(t.Secret))
	return h[:]
}

// AdminCompare reports whether the admin token's secret matches the stored
// hash, in constant time.
func AdminCompare(hash []byte, t Token) bool {
	return subtle.ConstantTimeCompare(hash, AdminHash(t)) == 1
}
