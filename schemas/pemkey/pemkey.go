// Package pemkey is the one codec of Ed25519 keys as PEM in the module:
// public keys as "PUBLIC KEY" (PKIX) — the server's check-in signing key,
// the agent-build signing key, an envoy's key in its registration — and
// private keys as "PRIVATE KEY" (PKCS #8), as the agent and the signing
// tools store them.
//
// Errors never include key material.
package pemkey

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// MarshalPublic encodes pub as PEM "PUBLIC KEY" (PKIX).
func MarshalPublic(pub ed25519.PublicKey) []byte {
	// MarshalPKIXPublicKey fails only for key types it does not know.
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParsePublic decodes the first PEM block of data, which must be a
// "PUBLIC KEY" holding an Ed25519 key.
func ParsePublic(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKIX public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("must be Ed25519, got %T", k)
	}
	return pub, nil
}

// MarshalPrivate encodes priv as PEM "PRIVATE KEY" (PKCS #8).
func MarshalPrivate(priv ed25519.PrivateKey) []byte {
	// MarshalPKCS8PrivateKey fails only for key types it does not know.
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// ParsePrivate decodes the first PEM block of data, which must be a
// "PRIVATE KEY" (PKCS #8) holding an Ed25519 key.
func ParsePrivate(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		// The parser's message can quote the encoding; say only what failed.
		return nil, errors.New("not a PKCS #8 private key")
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("must be Ed25519, got %T", k)
	}
	return priv, nil
}
