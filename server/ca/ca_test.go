package ca

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadOrCreateReusesAndSigns(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, Hostnames: []string{"vigo.example.com", "192.0.2.10"}}
	c1, err := LoadOrCreate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !c1.Created || !c1.ServerCertIssued {
		t.Fatalf("first start: created=%v issued=%v, want both", c1.Created, c1.ServerCertIssued)
	}
	for _, f := range []string{"tls/ca_key", "tls/key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", f, st.Mode().Perm())
		}
	}
	c2, err := LoadOrCreate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Created || c2.ServerCertIssued {
		t.Fatalf("second start: created=%v issued=%v, want neither", c2.Created, c2.ServerCertIssued)
	}
	if c1.Fingerprint() != c2.Fingerprint() {
		t.Fatal("CA changed across restarts")
	}
	leaf, err := x509.ParseCertificate(c2.ServerTLSCertificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	opts := x509.VerifyOptions{Roots: c2.Pool()}
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "vigo.example.com", "192.0.2.10"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("server certificate does not cover %s: %v", name, err)
		}
	}
	if chain := c2.ServerTLSCertificate().Certificate; len(chain) != 2 || !c2.Certificate().Equal(mustParse(t, chain[1])) {
		t.Fatal("the server chain does not end with the CA certificate")
	}
	if _, err := leaf.Verify(opts); err != nil {
		t.Fatalf("server certificate does not chain to the CA: %v", err)
	}
	// A new name forces a new server certificate, same CA.
	cfg.Hostnames = append(cfg.Hostnames, "new.example.com")
	c3, err := LoadOrCreate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !c3.ServerCertIssued || c3.Fingerprint() != c1.Fingerprint() {
		t.Fatalf("new SAN: issued=%v sameCA=%v", c3.ServerCertIssued, c3.Fingerprint() == c1.Fingerprint())
	}

	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	cert, err := c3.SignEnvoy(EnvoyParams{PublicKey: pub, Hostname: "web1.example.com", UUID: "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b", NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: c3.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("envoy certificate: %v", err)
	}
	if u, err := EnvoyUUID(cert); err != nil || u != "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b" {
		t.Fatalf("EnvoyUUID = %q, %v", u, err)
	}
	if cert.Subject.CommonName != "web1.example.com" || !pub.Equal(cert.PublicKey) {
		t.Fatal("envoy certificate has the wrong subject or key")
	}
}

func TestMismatchedCAKeyRefused(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if _, err := LoadOrCreate(Config{Dir: a}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(Config{Dir: b}); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(filepath.Join(b, "tls/ca_key"))
	if err := os.WriteFile(filepath.Join(a, "tls/ca_key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(Config{Dir: a}); err == nil {
		t.Fatal("a CA key that does not match the certificate was accepted")
	}
	os.Remove(filepath.Join(a, "tls/ca_key"))
	if _, err := LoadOrCreate(Config{Dir: a}); err == nil {
		t.Fatal("a CA certificate without its key was accepted")
	}
}

func TestSigningKeyReused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "signing_key")
	k1, err := LoadOrCreateSigningKey(p)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateSigningKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Fatal("signing key changed")
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
