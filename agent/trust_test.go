package agent

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

func testCert(t *testing.T, cn string, isCA bool) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true, IsCA: isCA, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTrustBundleSaved: a trust bundle replaces ca.pem atomically, is
// what a reload trusts, changes the digest sent at check-in, and a
// bundle holding a certificate that is not a CA is refused.
func TestTrustBundleSaved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	old, next := testCert(t, "old CA", true), testCert(t, "next CA", true)
	f := File{UUID: "u", ServerPublicKey: string(pemkey.MarshalPublic(pub))}
	if err := WriteEnrollment(dir, f, key, testCert(t, "envoy", false), old); err != nil {
		t.Fatal(err)
	}
	e, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	before := e.trustDigest()
	if err := e.saveTrust([][]byte{next.Raw, old.Raw}); err != nil {
		t.Fatal(err)
	}
	if got := e.TrustedCAs(); len(got) != 2 || !got[0].Equal(next) {
		t.Fatalf("trusted after save: %d CAs", len(got))
	}
	if string(e.trustDigest()) == string(before) {
		t.Error("the digest did not change with the bundle")
	}
	reloaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := reloaded.TrustedCAs(); len(got) != 2 || !got[1].Equal(old) {
		t.Fatalf("reloaded: %d CAs", len(got))
	}
	if err := e.saveTrust([][]byte{next.Raw, testCert(t, "not a CA", false).Raw}); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Fatalf("a bundle with a leaf: %v", err)
	}
	if err := e.saveTrust(nil); err == nil {
		t.Fatal("an empty bundle was saved")
	}
	// Refused bundles changed nothing.
	b, _ := os.ReadFile(filepath.Join(dir, CAName))
	if cas, err := decodeCerts(b); err != nil || len(cas) != 2 || len(e.TrustedCAs()) != 2 {
		t.Fatalf("after refused bundles: %d CAs on disk (%v), %d trusted", len(cas), err, len(e.TrustedCAs()))
	}
}
