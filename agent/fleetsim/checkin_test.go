package fleetsim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

func selfSigned(t *testing.T, name string, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestVerifyServer: the simulator still refuses a server its roots do not
// vouch for, whether or not another chain was verified before, and checks
// the name and the validity at every connection.
func TestVerifyServer(t *testing.T) {
	good := selfSigned(t, "vigo.test", time.Now().Add(time.Hour))
	other := selfSigned(t, "vigo.test", time.Now().Add(time.Hour))
	roots := x509.NewCertPool()
	roots.AddCert(good)
	cs := func(c *x509.Certificate) tls.ConnectionState {
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
	}
	for i := range 2 {
		if err := verifyServer(cs(good), roots, "vigo.test"); err != nil {
			t.Fatalf("round %d: trusted server refused: %v", i, err)
		}
		if err := verifyServer(cs(other), roots, "vigo.test"); err == nil {
			t.Fatalf("round %d: untrusted server accepted", i)
		}
		if err := verifyServer(cs(good), roots, "other.test"); err == nil {
			t.Fatalf("round %d: wrong name accepted", i)
		}
	}
	if err := verifyServer(cs(good), x509.NewCertPool(), "vigo.test"); err == nil {
		t.Error("chain verified under other roots accepted")
	}
	if err := verifyServer(tls.ConnectionState{}, roots, "vigo.test"); err == nil {
		t.Error("no certificate accepted")
	}
}
