package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vigo-enroll/vigo/schemas/atomicfile"
)

// Rotation phases, as in store.CAState.Phase.
const (
	PhaseIdle     = ""
	PhasePrepared = "prepared"
	PhaseActive   = "active"
)

// ErrNoKey is returned by Apply when the signing CA's key is not in this
// server's data folder: the server keeps signing with the CA it has.
var ErrNoKey = errors.New("CA key not found")

// serialMarker is the first byte of the serial of every envoy certificate
// signed since CA rotation exists; the next 8 bytes are the signing CA's
// tag (see SerialPrefix), so that the store can count the envoys holding a
// certificate from each CA without parsing certificates.
const serialMarker = 0x5c

// SerialPrefix returns the lower-case hex prefix of the serials of the
// envoy certificates that SignEnvoy issues with the CA ca: the marker byte
// and the first 8 bytes of the SHA-256 of the CA certificate. Certificates
// issued before the prefix existed have random serials (first byte 0x40 to
// 0x7f); the chance that one starts with another CA's prefix is 2^-70.
func SerialPrefix(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.Raw)
	return hex.EncodeToString(append([]byte{serialMarker}, sum[:8]...))
}

// taggedSerial returns a serial of 20 bytes (the most RFC 5280 allows):
// the marker, the CA's 8-byte tag and 88 random bits.
func taggedSerial(ca *x509.Certificate) *big.Int {
	sum := sha256.Sum256(ca.Raw)
	b := make([]byte, 20)
	b[0] = serialMarker
	copy(b[1:9], sum[:8])
	// crypto/rand.Read never returns an error since Go 1.24.
	_, _ = rand.Read(b[9:])
	return new(big.Int).SetBytes(b)
}

// RotationPaths returns where the certificate and key of a CA created by
// a rotation live: ca-<first 16 hex digits of its fingerprint>.pem and
// .key, beside the configured CA certificate and key.
func (c Config) RotationPaths(fingerprint string) (cert, key string) {
	caFile, caKeyFile := c.CAPaths()
	name := "ca-" + fingerprint[:16]
	return filepath.Join(filepath.Dir(caFile), name+".pem"), filepath.Join(filepath.Dir(caKeyFile), name+".key")
}

// Config returns the configuration the CA was loaded with.
func (c *CA) Config() Config { return c.cfg }

// CreateNext creates a new CA (the next one of a rotation), writes its key
// (0600) and certificate at RotationPaths and returns the certificate. It
// does not change what this CA signs or trusts (see Apply).
func (c *CA) CreateNext() (*x509.Certificate, error) {
	now := c.now()
	host, _ := os.Hostname()
	// The date tells the CAs of successive rotations apart.
	cert, key, err := newCA("Vigo Enroll CA "+host+" "+now.UTC().Format("2006-01-02T150405Z"), now,
		func(cert *x509.Certificate) (string, string) { return c.cfg.RotationPaths(Fingerprint(cert)) })
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.keys[Fingerprint(cert)] = key
	c.mu.Unlock()
	return cert, nil
}

// keyFor returns the key of the CA cert: the configured CA's, or the one
// at RotationPaths. c.mu must be held.
func (c *CA) keyFor(cert *x509.Certificate) (crypto.Signer, error) {
	fp := Fingerprint(cert)
	if k, ok := c.keys[fp]; ok {
		return k, nil
	}
	_, keyFile := c.cfg.RotationPaths(fp)
	k, err := ReadPrivateKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w for CA %s: %w", ErrNoKey, fp, err)
	}
	if !publicKeysEqual(k.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not match CA %s", keyFile, fp)
	}
	c.keys[fp] = k
	return k, nil
}

// rotatedIssuer tells whether leaf was issued by a CA at RotationPaths.
func (c *CA) rotatedIssuer(leaf *x509.Certificate) bool {
	caFile, _ := c.cfg.CAPaths()
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(caFile), "ca-*.pem"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if ca, err := ParseCertPEM(b); err == nil && ca.IsCA && leaf.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}

// IssuedBySigner tells whether cert was issued by the CA that signs now.
// During the active phase of a rotation, an envoy whose certificate is not
// is asked to renew.
func (c *CA) IssuedBySigner(cert *x509.Certificate) bool {
	c.mu.RLock()
	signer, one := c.cert, len(c.trusted) == 1
	c.mu.RUnlock()
	if one {
		// One CA: every certificate that verified is from it (and this
		// runs at every check-in: no signature check).
		return true
	}
	if len(cert.AuthorityKeyId) > 0 && len(signer.SubjectKeyId) > 0 {
		return bytes.Equal(cert.AuthorityKeyId, signer.SubjectKeyId)
	}
	return bytes.Equal(cert.RawIssuer, signer.RawSubject) && cert.CheckSignatureFrom(signer) == nil
}

// Apply makes the CA follow a rotation state: in the idle phase current
// alone is trusted and signs; prepared, next is trusted too; active, next
// signs (envoy and server certificates) and current is still trusted. It
// reports whether anything changed. When the key of the CA that should
// sign is not in this server's data folder, the trust still changes but
// the signing CA does not, and the error wraps ErrNoKey.
func (c *CA) Apply(phase string, current, next *x509.Certificate) (changed bool, err error) {
	if current == nil || (phase != PhaseIdle && next == nil) {
		return false, fmt.Errorf("apply CA rotation phase %q: a CA certificate is missing", phase)
	}
	var signer *x509.Certificate
	var trusted []*x509.Certificate
	switch phase {
	case PhaseIdle:
		signer, trusted = current, []*x509.Certificate{current}
	case PhasePrepared:
		signer, trusted = current, []*x509.Certificate{current, next}
	case PhaseActive:
		signer, trusted = next, []*x509.Certificate{next, current}
	default:
		return false, fmt.Errorf("apply CA rotation: unknown phase %q", phase)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	key, keyErr := c.keyFor(signer)
	if keyErr != nil && phase == PhaseIdle {
		// A finished rotation: the CA it dropped must not stay trusted
		// here, nor can this server sign with the one that remains.
		return false, fmt.Errorf("apply CA rotation (finished): %w", keyErr)
	}
	if keyErr != nil {
		signer, key = c.cert, c.key
		// The signing CA stays trusted whatever the state says: the
		// certificates it signs must keep working.
		if !slices.ContainsFunc(trusted, signer.Equal) {
			trusted = append(trusted, signer)
		}
		keyErr = fmt.Errorf("apply CA rotation phase %q: %w", phase, keyErr)
	}
	// The signing CA comes first.
	slices.SortStableFunc(trusted, func(a, b *x509.Certificate) int {
		switch {
		case a.Equal(signer):
			return -1
		case b.Equal(signer):
			return 1
		}
		return 0
	})
	if signer.Equal(c.cert) && slices.EqualFunc(trusted, c.trusted, (*x509.Certificate).Equal) {
		return false, keyErr
	}
	if !signer.Equal(c.cert) {
		server, err := c.issueServerCert(signer, key)
		if err != nil {
			return false, err
		}
		c.cert, c.certPEM, c.key, c.server = signer, EncodeCertPEM(signer), key, server
	}
	pool := x509.NewCertPool()
	for _, t := range trusted {
		pool.AddCert(t)
	}
	c.trusted, c.pool = trusted, pool
	return true, keyErr
}

// issueServerCert issues a server certificate for the configured names
// with the server's existing key, signed by the CA signer. c.mu must be
// held.
func (c *CA) issueServerCert(signer *x509.Certificate, key crypto.Signer) (tls.Certificate, error) {
	if c.serverKey == nil {
		return tls.Certificate{}, errors.New("issue server certificate: the server key is not a signer")
	}
	names, ips := serverNames(c.cfg)
	now := c.now()
	notAfter := now.Add(825 * 24 * time.Hour)
	if notAfter.After(signer.NotAfter) {
		notAfter = signer.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"Vigo Enroll"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, c.serverKey.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: c.serverKey, Leaf: leaf}, nil
}

// Install makes the signing CA the configured one on disk, after a
// rotation finished: its certificate and key replace the configured CA
// files and the server certificate is written with them, so that a restart
// loads them without the rotation state. The CA it replaces is kept at its
// RotationPaths (delete it once no backup needs it). It does nothing when
// the signing CA already is the configured one.
func (c *CA) Install() (installed bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert.Equal(c.base) {
		return false, nil
	}
	keyPEM := func(k crypto.Signer) ([]byte, error) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("install CA: marshal key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
	// The retired CA first, so that nothing is ever lost.
	oldCert, oldKeyFile := c.cfg.RotationPaths(Fingerprint(c.base))
	oldKey, err := keyPEM(c.keys[Fingerprint(c.base)])
	if err != nil {
		return false, err
	}
	if err := atomicfile.Write(oldKeyFile, oldKey, 0o600); err != nil {
		return false, err
	}
	if err := atomicfile.Write(oldCert, EncodeCertPEM(c.base), 0o644); err != nil {
		return false, err
	}
	srvKey, err := keyPEM(c.serverKey)
	if err != nil {
		return false, err
	}
	certFile, keyFile := c.cfg.path(c.cfg.CertFile, "tls/cert"), c.cfg.path(c.cfg.KeyFile, "tls/key")
	if err := atomicfile.Write(keyFile, srvKey, 0o600); err != nil {
		return false, err
	}
	if err := atomicfile.Write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.server.Certificate[0]}), 0o644); err != nil {
		return false, err
	}
	newKey, err := keyPEM(c.key)
	if err != nil {
		return false, err
	}
	caFile, caKeyFile := c.cfg.CAPaths()
	if err := atomicfile.Write(caKeyFile, newKey, 0o600); err != nil {
		return false, err
	}
	if err := atomicfile.Write(caFile, c.certPEM, 0o644); err != nil {
		return false, err
	}
	c.base = c.cert
	return true, nil
}
