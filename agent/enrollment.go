package agent

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/schemas/atomicfile"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

// Enrollment is this envoy's identity as saved by Register: the config
// file, the key, the current certificate and the CA. It is safe for
// concurrent use; the certificate changes on renewal.
type Enrollment struct {
	Dir  string
	File File
	Key  ed25519.PrivateKey
	// CA is the first CA of ca.pem when the enrollment was loaded (see
	// TrustedCAs for the CAs trusted now).
	CA        *x509.Certificate
	ServerKey ed25519.PublicKey // pinned check-in response key
	Interval  time.Duration

	cert atomic.Pointer[tls.Certificate]
	// sessions are the TLS sessions of check-in connections, resumed at
	// the next connection (see sessionCache).
	sessions     tls.ClientSessionCache
	sessionsOnce sync.Once
	// trust holds the CAs trusted: ca.pem may hold several during a CA
	// rotation, and the server sends the list at check-in.
	trust atomic.Pointer[[]*x509.Certificate]
}

// sessionCache keeps the TLS 1.3 sessions of check-in connections, each
// under the serial of the certificate it was established with. A resumed
// session presents the certificate of its original handshake, so after a
// renewal the next handshake must be a full one that presents the new
// certificate: it finds no session under the new serial. (The server
// declines a ticket whose certificate is not current anyway; this saves
// the round of a declined ticket.)
type sessionCache struct {
	e     *Enrollment
	inner tls.ClientSessionCache
}

func (c sessionCache) key(k string) string {
	return k + "|" + c.e.Certificate().SerialNumber.Text(16)
}

func (c sessionCache) Get(k string) (*tls.ClientSessionState, bool) { return c.inner.Get(c.key(k)) }
func (c sessionCache) Put(k string, cs *tls.ClientSessionState)     { c.inner.Put(c.key(k), cs) }

// Load reads the enrollment saved in dir.
func Load(dir string) (*Enrollment, error) {
	f, err := ReadFile(dir)
	if err != nil {
		return nil, err
	}
	e := &Enrollment{Dir: dir, File: f}
	path := func(name string) string {
		if filepath.IsAbs(name) {
			return name
		}
		return filepath.Join(dir, name)
	}
	kb, err := os.ReadFile(path(f.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("load enrollment: %w", err)
	}
	if e.Key, err = pemkey.ParsePrivate(kb); err != nil {
		return nil, fmt.Errorf("load enrollment key %s: %w", path(f.KeyFile), err)
	}
	cb, err := os.ReadFile(path(f.CertFile))
	if err != nil {
		return nil, fmt.Errorf("load enrollment: %w", err)
	}
	cert, err := decodeCert(cb)
	if err != nil {
		return nil, fmt.Errorf("load enrollment certificate %s: %w", path(f.CertFile), err)
	}
	ab, err := os.ReadFile(path(f.CAFile))
	if err != nil {
		return nil, fmt.Errorf("load enrollment: %w", err)
	}
	cas, err := decodeCerts(ab)
	if err != nil {
		return nil, fmt.Errorf("load enrollment CA %s: %w", path(f.CAFile), err)
	}
	e.CA = cas[0]
	e.trust.Store(&cas)
	if e.ServerKey, err = pemkey.ParsePublic([]byte(f.ServerPublicKey)); err != nil {
		return nil, fmt.Errorf("load enrollment: server public key: %w", err)
	}
	e.Interval = time.Minute
	if d, err := time.ParseDuration(f.CheckinInterval); err == nil && d > 0 {
		e.Interval = d
	}
	e.setCert(cert)
	return e, nil
}

func (e *Enrollment) setCert(cert *x509.Certificate) {
	e.cert.Store(&tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: e.Key, Leaf: cert})
}

// Certificate returns the current client certificate.
func (e *Enrollment) Certificate() *x509.Certificate { return e.cert.Load().Leaf }

// TrustedCAs returns the CAs trusted now, the one that signs the server's
// certificate first.
func (e *Enrollment) TrustedCAs() []*x509.Certificate {
	if p := e.trust.Load(); p != nil {
		return *p
	}
	return nil
}

// CAPool returns a pool holding the trusted CAs.
func (e *Enrollment) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range e.TrustedCAs() {
		p.AddCert(c)
	}
	return p
}

// trustDigest returns the digest of the trusted CAs the agent sends at
// check-in (agentpb.TrustBundleDigest).
func (e *Enrollment) trustDigest() []byte {
	cas := e.TrustedCAs()
	ders := make([][]byte, len(cas))
	for i, c := range cas {
		ders[i] = c.Raw
	}
	return agentpb.TrustBundleDigest(ders)
}

// saveTrust replaces the trusted CAs with ders (a trust bundle the server
// signed), writing ca.pem atomically. Each must be a CA certificate.
func (e *Enrollment) saveTrust(ders [][]byte) error {
	cas := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return fmt.Errorf("save trust bundle: %w", err)
		}
		if !c.IsCA {
			return fmt.Errorf("save trust bundle: %q is not a CA certificate", c.Subject.CommonName)
		}
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return errors.New("save trust bundle: no CA certificate")
	}
	name := e.File.CAFile
	if !filepath.IsAbs(name) {
		name = filepath.Join(e.Dir, name)
	}
	if err := writeCAs(name, cas); err != nil {
		return fmt.Errorf("save trust bundle: %w", err)
	}
	e.trust.Store(&cas)
	return nil
}

// ClientTLSConfig returns the TLS configuration for every contact with the
// server after registration: TLS 1.3, the server verified against the saved
// CA under File.ServerName, and the current client certificate presented
// through GetClientCertificate (so a renewed certificate is used by the
// next handshake without rebuilding anything).
func (e *Enrollment) ClientTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    e.CAPool(),
		ServerName: e.File.ServerName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return e.cert.Load(), nil
		},
		// Sessions are resumed: a reconnecting agent skips the
		// certificate exchange (the server still judges the envoy).
		ClientSessionCache: e.sessionCache(),
	}
}

// sessionCache returns the enrollment's session cache: a few entries, as
// an agent talks to one address (more with several replicas behind one
// name, each with its own tickets).
func (e *Enrollment) sessionCache() tls.ClientSessionCache {
	e.sessionsOnce.Do(func() { e.sessions = sessionCache{e: e, inner: tls.NewLRUClientSessionCache(8)} })
	return e.sessions
}

// HTTPSTLSConfig returns the TLS configuration for the server's HTTPS
// API after registration (self-update downloads, rebootstrap): as
// ClientTLSConfig, but the server may also present a certificate the
// system trusts, for a server whose HTTPS listener has an operator's
// certificate (e.g. from Let's Encrypt) while gRPC keeps Vigo's. What
// comes over HTTPS is authenticated anyway: a download by the digest (and
// signature) of an mTLS check-in, a rebootstrap by the pinned CA.
func (e *Enrollment) HTTPSTLSConfig() *tls.Config {
	c := e.ClientTLSConfig()
	c.MinVersion = tls.VersionTLS12
	// The HTTPS listener's tickets are not the check-in listener's, and
	// both go by the same server name: a shared cache would offer each
	// the other's. Downloads are rare: no resumption.
	c.ClientSessionCache = nil
	if pool, err := x509.SystemCertPool(); err == nil {
		for _, ca := range e.TrustedCAs() {
			pool.AddCert(ca)
		}
		c.RootCAs = pool
	}
	return c
}

// PinAgentSigningKey saves key as the agent signing key of this
// enrollment (File.AgentSigningKey in DIR/config), when none was pinned at
// registration; from then on every agent build must be signed by it. A
// different key already pinned is an error: a pin is never replaced.
func (e *Enrollment) PinAgentSigningKey(key ed25519.PublicKey) error {
	pemKey := pemkey.MarshalPublic(key)
	switch cur := e.File.AgentSigningKey; {
	case cur == string(pemKey):
		return nil
	case cur != "":
		return fmt.Errorf("pin agent signing key in %s: another key is pinned", e.Dir)
	}
	f := e.File
	f.AgentSigningKey = string(pemKey)
	if err := writeJSON(filepath.Join(e.Dir, ConfigName), f, 0o644); err != nil {
		return fmt.Errorf("pin agent signing key: %w", err)
	}
	e.File.AgentSigningKey = f.AgentSigningKey
	return nil
}

// saveCert writes a renewed certificate and makes it current.
func (e *Enrollment) saveCert(cert *x509.Certificate) error {
	name := e.File.CertFile
	if !filepath.IsAbs(name) {
		name = filepath.Join(e.Dir, name)
	}
	if err := atomicfile.Write(name, encodeCert(cert.Raw), 0o644); err != nil {
		return err
	}
	e.setCert(cert)
	return nil
}
