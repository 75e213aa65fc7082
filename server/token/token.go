// Package token generates, parses and checks one-time enrollment tokens of
// the form vt_<id>.<secret>, and named admin tokens of the form
// va_<id>.<secret> (admin.go).
//
// The id (10 characters of base32) is stored in plain text and indexed, so a
// token is looked up by id and an unknown id is refused without any bcrypt
// work. The secret (32 characters of base32, 160 bits) is stored only as a
// bcrypt hash. The package is pure: no I/O besides crypto/rand.
package token

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Prefix starts every token.
const Prefix = "vt_"

const (
	idLen     = 10
	secretLen = 32
	// Cost is the bcrypt cost of stored secrets (at least 10 by policy).
	Cost = 10
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ErrMalformed is returned by Parse for anything that is not a well-formed token.
var ErrMalformed = errors.New("malformed token: expected vt_<id>.<secret>")

// Token is a parsed token. Secret must never be logged.
type Token struct {
	ID     string
	Secret string
}

// String returns the full token, secret included: show it once, never log it.
func (t Token) String() string { return Prefix + t.ID + "." + t.Secret }

// Generate returns a new random token.
func Generate() Token {
	var b [30]byte         // 240 bits -> 48 base32 characters; 42 are used
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	s := enc.EncodeToString(b[:])
	return Token{ID: s[:idLen], Secret: s[idLen : idLen+secretLen]}
}

// Parse splits a token into id and secret, checking its form strictly.
func Parse(s string) (Token, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), Prefix)
	if !ok {
		return Token{}, ErrMalformed
	}
	id, secret, ok := strings.Cut(rest, ".")
	if !ok || !ValidID(id) || len(secret) != secretLen || !isBase32(secret) {
		return Token{}, ErrMalformed
	}
	return Token{ID: id, Secret: secret}, nil
}

// ValidID reports whether id has the form of a token id.
func ValidID(id string) bool { return len(id) == idLen && isBase32(id) }

func isBase32(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// Hash returns the bcrypt hash of the token's secret.
func Hash(t Token) ([]byte, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(t.Secret), Cost)
	if err != nil {
		return nil, fmt.Errorf("hash token %s: %w", t.ID, err)
	}
	return h, nil
}

// Compare reports whether the token's secret matches the stored hash, in
// constant time (bcrypt's comparison is constant-time).
func Compare(hash []byte, t Token) bool {
	return bcrypt.CompareHashAndPassword(hash, []byte(t.Secret)) == nil
}

// CompareUnknown spends the time of one Compare and reports false: it is
// what a caller presenting an unknown token id gets, so that the response
// time does not tell which ids exist. It compares against the hash, at
// Cost, of a random secret that is never kept.
func CompareUnknown(t Token) bool {
	_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte(t.Secret))
	return false
}

// dummyHash is made at first use rather than at start, so that a program
// that never checks a token pays nothing.
var dummyHash = sync.OnceValue(func() []byte {
	h, err := Hash(Generate())
	if err != nil {
		panic(err) // bcrypt fails only for a secret over 72 bytes or a bad cost, both constants here
	}
	return h
})
