package server

import (
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/ca"
)

// testPair is a server certificate for localhost from a new CA, as
// servertest.NewPublicCA makes (which this package's tests cannot import).
type testPair struct {
	CertFile, KeyFile string
	Leaf              *x509.Certificate
}

func newTestPair(t *testing.T) testPair {
	t.Helper()
	dir := t.TempDir()
	c, err := ca.LoadOrCreate(ca.Config{Dir: dir, Hostnames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.ServerTLSCertificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return testPair{CertFile: filepath.Join(dir, "tls", "cert"), KeyFile: filepath.Join(dir, "tls", "key"), Leaf: leaf}
}

// TestHTTPSCertReloadsOnChange (issue 16, item 3): an operator's HTTPS
// certificate is re-read when its files change (an ACME renewal), at the
// first handshake after httpsCertCheckEvery or at once on Reload
// (SIGHUP); a pair that does not load keeps the previous certificate.
func TestHTTPSCertReloadsOnChange(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	install := func(certFrom, keyFrom testPair, at time.Time) {
		t.Helper()
		for _, f := range [][2]string{{certFrom.CertFile, certFile}, {keyFrom.KeyFile, keyFile}} {
			b, err := os.ReadFile(f[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f[1], b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(f[1], at, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	a, b, c := newTestPair(t), newTestPair(t), newTestPair(t)
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	install(a, a, now)
	hc, err := newHTTPSCert(certFile, keyFile, slog.New(slog.DiscardHandler), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	presented := func() *x509.Certificate {
		t.Helper()
		tc, err := hc.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return tc.Leaf
	}
	for _, step := range []struct {
		name    string
		do      func()
		advance time.Duration
		want    testPair
	}{
		{name: "renewed, before the next look", do: func() { install(b, b, now.Add(time.Minute)) }, advance: httpsCertCheckEvery - time.Second, want: a},
		{name: "renewed, at the next look", advance: time.Second, want: b},
		{name: "half-written renewal (a new certificate, the old key)", do: func() { install(c, b, now.Add(2*time.Minute)) }, advance: httpsCertCheckEvery, want: b},
		{name: "the key follows; SIGHUP", do: func() { install(c, c, now.Add(3*time.Minute)); hc.Reload() }, want: c},
	} {
		if step.do != nil {
			step.do()
		}
		now = now.Add(step.advance)
		if got := presented(); !got.Equal(step.want.Leaf) {
			t.Errorf("%s: presents the certificate issued by %s, want the one issued by %s", step.name, got.Issuer, step.want.Leaf.Issuer)
		}
	}
	if _, err := newHTTPSCert(filepath.Join(dir, "missing.pem"), keyFile, slog.New(slog.DiscardHandler), nil); err == nil {
		t.Error("a missing certificate file at start: no error")
	}
}
