package ca

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func signTestEnvoy(t *testing.T, c *CA) *x509.Certificate {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.SignEnvoy(EnvoyParams{PublicKey: pub, Hostname: "h.example.com", UUID: "u1", NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func verifies(cert *x509.Certificate, c *CA) bool {
	_, err := cert.Verify(x509.VerifyOptions{Roots: c.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir}
	c, err := LoadOrCreate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := c.Certificate()
	oldEnvoy := signTestEnvoy(t, c)
	if got := SerialHex(oldEnvoy); !strings.HasPrefix(got, SerialPrefix(old)) || len(got) != 40 {
		t.Errorf("serial %s: want 40 hex digits starting with %s", got, SerialPrefix(old))
	}
	next, err := c.CreateNext()
	if err != nil {
		t.Fatal(err)
	}
	_, keyFile := cfg.RotationPaths(Fingerprint(next))
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("next CA key %s: %v, %v; want 0600", keyFile, st, err)
	}

	// Prepared: both trusted, the old one signs.
	if changed, err := c.Apply(PhasePrepared, old, next); !changed || err != nil {
		t.Fatalf("Apply(prepared) = %v, %v", changed, err)
	}
	if changed, err := c.Apply(PhasePrepared, old, next); changed || err != nil {
		t.Fatalf("Apply(prepared) again = %v, %v, want no change", changed, err)
	}
	if !c.Certificate().Equal(old) || len(c.Trusted()) != 2 || !c.IssuedBySigner(oldEnvoy) {
		t.Fatal("prepared: the old CA must sign, both be trusted")
	}

	// Active: the new one signs envoy and server certificates; old
	// certificates still verify.
	if _, err := c.Apply(PhaseActive, old, next); err != nil {
		t.Fatal(err)
	}
	newEnvoy := signTestEnvoy(t, c)
	if newEnvoy.CheckSignatureFrom(next) != nil || !strings.HasPrefix(SerialHex(newEnvoy), SerialPrefix(next)) {
		t.Fatal("active: envoy certificate not signed by the new CA with its serial prefix")
	}
	if !verifies(oldEnvoy, c) || !verifies(newEnvoy, c) {
		t.Fatal("active: both envoy certificates must verify")
	}
	if c.IssuedBySigner(oldEnvoy) || !c.IssuedBySigner(newEnvoy) {
		t.Fatal("IssuedBySigner wrong in the active phase")
	}
	srv := c.ServerTLSCertificate()
	leaf, _ := x509.ParseCertificate(srv.Certificate[0])
	if leaf.CheckSignatureFrom(next) != nil || len(srv.Certificate) != 2 || !mustParse(t, srv.Certificate[1]).Equal(next) {
		t.Fatal("active: the server certificate must be the new CA's, served with it")
	}
	if c.Fingerprint() != Fingerprint(next) {
		t.Fatal("active: Fingerprint is the signing CA's")
	}

	// Finished: only the new CA.
	if _, err := c.Apply(PhaseIdle, next, nil); err != nil {
		t.Fatal(err)
	}
	if verifies(oldEnvoy, c) || !verifies(newEnvoy, c) {
		t.Fatal("finished: only the new CA's certificates verify")
	}
	if ok, err := c.Install(); !ok || err != nil {
		t.Fatalf("Install = %v, %v", ok, err)
	}
	if ok, err := c.Install(); ok || err != nil {
		t.Fatalf("Install again = %v, %v, want nothing to do", ok, err)
	}
	// A restart loads the new CA from the configured files, and the same
	// server key (curl's pin in the one-liner).
	c2, err := LoadOrCreate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Certificate().Equal(next) || c2.Created || c2.ServerCertIssued {
		t.Fatalf("after restart: CA %s created=%v issued=%v", c2.Fingerprint(), c2.Created, c2.ServerCertIssued)
	}
	leaf2, _ := x509.ParseCertificate(c2.ServerTLSCertificate().Certificate[0])
	if !leaf2.Equal(leaf) {
		t.Error("after restart: not the server certificate issued at activation")
	}
	oldCertFile, _ := cfg.RotationPaths(Fingerprint(old))
	if _, err := os.Stat(oldCertFile); err != nil {
		t.Errorf("the retired CA is not kept: %v", err)
	}
}

func TestRotationWithoutKey(t *testing.T) {
	// Another replica prepared; this one has the certificate (from the
	// store) but not the key: it trusts the new CA and keeps signing.
	other, err := LoadOrCreate(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	next, err := other.CreateNext()
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadOrCreate(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	old := c.Certificate()
	changed, err := c.Apply(PhaseActive, old, next)
	if !changed || !errors.Is(err, ErrNoKey) {
		t.Fatalf("Apply(active) without the key = %v, %v, want a change and ErrNoKey", changed, err)
	}
	if !c.Certificate().Equal(old) || len(c.Trusted()) != 2 {
		t.Fatal("without the key: the old CA signs, both are trusted")
	}
	// Finished, still without the key: an error, and nothing changes
	// (the old CA is neither kept alone nor silently dropped).
	if changed, err := c.Apply(PhaseIdle, next, nil); changed || !errors.Is(err, ErrNoKey) {
		t.Fatalf("Apply(idle) without the key = %v, %v; want no change and ErrNoKey", changed, err)
	}
}
