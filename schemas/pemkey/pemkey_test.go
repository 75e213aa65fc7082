package pemkey_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

func TestRoundTrip(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	gotPub, err := pemkey.ParsePublic(pemkey.MarshalPublic(pub))
	if err != nil || !gotPub.Equal(pub) {
		t.Fatalf("public key round trip: %v", err)
	}
	gotPriv, err := pemkey.ParsePrivate(pemkey.MarshalPrivate(priv))
	if err != nil || !gotPriv.Equal(priv) {
		t.Fatalf("private key round trip: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPubDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	ecPrivDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	secret := []byte("0123456789abcdef0123456789abcdef")
	tests := []struct {
		name    string
		parse   func([]byte) error
		data    []byte
		wantErr string
	}{
		{"public: empty", public, nil, "not a PEM PUBLIC KEY block"},
		{"public: a private key", public, pemkey.MarshalPrivate(ed), "not a PEM PUBLIC KEY block"},
		{"public: ECDSA", public, pemOf("PUBLIC KEY", ecPubDER), "must be Ed25519, got *ecdsa.PublicKey"},
		{"public: garbage", public, pemOf("PUBLIC KEY", secret), "not a PKIX public key"},
		{"private: a public key", private, pemkey.MarshalPublic(ed.Public().(ed25519.PublicKey)), "not a PEM PRIVATE KEY block"},
		{"private: ECDSA", private, pemOf("PRIVATE KEY", ecPrivDER), "must be Ed25519, got *ecdsa.PrivateKey"},
		{"private: garbage", private, pemOf("PRIVATE KEY", secret), "not a PKCS #8 private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse(tt.data)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), string(secret[:8])) {
				t.Errorf("error %q quotes the key material", err)
			}
		})
	}
}

func public(b []byte) error  { _, err := pemkey.ParsePublic(b); return err }
func private(b []byte) error { _, err := pemkey.ParsePrivate(b); return err }
