package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

// DefaultHTTPSPort is the server's HTTPS port when --server names none.
const DefaultHTTPSPort = "8443"

// RegisterParams are the inputs of Register.
type RegisterParams struct {
	// Server is HOST, HOST:PORT or an https:// URL (default port 8443).
	Server string
	// Token is the one-time enrollment token, if the policy needs one. It
	// is never logged.
	Token string
	// Hostname to register (default: the OS hostname, lower-cased).
	Hostname string
	// Force replaces an active envoy with the same hostname.
	Force bool
	// Dir is the config folder (default DefaultDir).
	Dir string
	// CAFingerprint, when set, is the hex SHA-256 of Vigo's CA
	// certificate (colons and case ignored); see the package doc.
	CAFingerprint string
	// RootCAs verify an HTTPS certificate that is not from the pinned CA
	// (an operator's, e.g. from Let's Encrypt); nil means the system's.
	RootCAs *x509.CertPool
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Now returns the current time (default time.Now).
	Now func() time.Time

	// previous is the identity proved when rebootstrapping.
	previous *Enrollment
}

// Register creates a new key, registers it with the server and saves the
// enrollment in p.Dir. It does not check in: the caller does that with
// New(...).CheckinOnce to prove the mTLS path.
func Register(ctx context.Context, p RegisterParams) (*Enrollment, error) {
	if p.Dir == "" {
		p.Dir = DefaultDir
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	logger := p.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	base, err := serverURL(p.Server)
	if err != nil {
		return nil, err
	}
	if p.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("register: hostname: %w", err)
		}
		p.Hostname = h
	}
	p.Hostname = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(p.Hostname)), ".")
	if p.Hostname == "" {
		return nil, errors.New("register: empty hostname")
	}
	pin, err := parseFingerprint(p.CAFingerprint)
	if err != nil {
		return nil, err
	}

	tlsConf, pin, err := registerTLS(p, base, pin, logger)
	if err != nil {
		return nil, err
	}

	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("register: generate key: %w", err)
	}
	pubPEM := string(pemkey.MarshalPublic(pub))
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: p.Hostname}, DNSNames: []string{p.Hostname},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("register: create CSR: %w", err)
	}
	req := apiv1.RegisterRequest{
		Hostname:  p.Hostname,
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
		PublicKey: pubPEM,
		CSR:       string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		Token:     p.Token,
		Force:     p.Force,
	}
	if prev := p.previous; prev != nil {
		req.PreviousUUID = prev.File.UUID
		sig := ed25519.Sign(prev.Key, apiv1.RebootstrapSigningBytes(prev.File.UUID, p.Hostname, pubPEM))
		req.PreviousSignature = base64.StdEncoding.EncodeToString(sig)
	}

	resp, err := postRegister(ctx, base, tlsConf, req)
	if err != nil {
		return nil, err
	}
	cert, caCert, err := checkRegisterResponse(resp, pub, pin, p.Now())
	if err != nil {
		return nil, err
	}
	grpcAddr, err := GRPCAddress(resp.GRPCAddress, base.Hostname())
	if err != nil {
		return nil, err
	}
	f := File{
		ServerURL:       base.String(),
		GRPCAddress:     grpcAddr,
		ServerName:      base.Hostname(),
		UUID:            resp.UUID,
		Hostname:        resp.Hostname,
		KeyFile:         KeyName,
		CertFile:        CertName,
		CAFile:          CAName,
		CheckinInterval: resp.CheckinInterval,
		ServerPublicKey: resp.ServerPublicKey,
		AgentSigningKey: resp.SigningKey,
		RegisteredAt:    p.Now().UTC(),
	}
	if f.Hostname == "" {
		f.Hostname = p.Hostname
	}
	if err := WriteEnrollment(p.Dir, f, key, cert, caCert); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	// During a CA rotation the answer holds every trusted CA, the pinned
	// (signing) one first; they came over the pinned connection.
	if cas, err := decodeCerts([]byte(resp.CA)); err == nil && len(cas) > 1 {
		if err := writeCAs(filepath.Join(p.Dir, CAName), cas); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	_ = os.Remove(filepath.Join(p.Dir, StatusName))
	logger.Info("registered", "envoy_uuid", f.UUID, "hostname", f.Hostname, "method", resp.Method, "rule", resp.Rule, "revision", resp.PolicyRevision)
	return Load(p.Dir)
}

// serverURL turns HOST, HOST:PORT or https://HOST[:PORT] into a base URL.
func serverURL(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("register: no server given")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("register: server %q: %w", s, err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("register: server %q: only https is supported", s)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("register: server %q has no host", s)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), DefaultHTTPSPort)
	}
	return &url.URL{Scheme: "https", Host: u.Host}, nil
}

func parseFingerprint(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	s = strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(strings.TrimPrefix(strings.TrimPrefix(s, "sha256:"), "SHA256:")))
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New("register: --ca-fingerprint must be the 64 hex digits of a SHA-256")
	}
	return b, nil
}

// registerTLS chooses how the first contact trusts the server, and
// returns the pin the CA in the answer must match (nil: none).
func registerTLS(p RegisterParams, base *url.URL, pin []byte, logger *slog.Logger) (*tls.Config, []byte, error) {
	if pin == nil && p.previous != nil && p.previous.File.ServerName == base.Hostname() {
		// Rebootstrap: the server is known; its CA must not change.
		pin = fingerprintOf(p.previous.TrustedCAs()[0])
	}
	if pin == nil {
		if e, err := Load(p.Dir); err == nil && e.File.ServerURL == base.String() {
			// Re-registration with the same server: the saved CA is pinned.
			pin = fingerprintOf(e.TrustedCAs()[0])
		}
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: base.Hostname()}
	if pin == nil {
		// First contact without a fingerprint: like `curl -k`.
		logger.Warn("first contact: the server's certificate is not verified (pass --ca-fingerprint to pin its CA)", "server", base.String())
		conf.InsecureSkipVerify = true
		return conf, nil, nil
	}
	// Pinning: the chain is checked by hand, before any byte (a token) is
	// sent; checkRegisterResponse then checks the CA in the answer.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPinned(cs, pin, base.Hostname(), p.RootCAs) }
	return conf, pin, nil
}

func fingerprintOf(c *x509.Certificate) []byte {
	sum := sha256.Sum256(c.Raw)
	return sum[:]
}

// verifyPinned accepts the HTTPS server's certificate when it chains to
// the pinned CA, found in the chain the server presents (Vigo's own
// certificate), or else when it is trusted by roots (nil: the system's),
// for the server's name: an operator's certificate, e.g. from Let's
// Encrypt. The pin is Vigo's CA either way: the CA in the registration
// answer must match it (checkRegisterResponse), and it alone authenticates
// the gRPC server afterwards.
func verifyPinned(cs tls.ConnectionState, pin []byte, name string, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	for _, c := range cs.PeerCertificates {
		if !bytes.Equal(fingerprintOf(c), pin) {
			continue
		}
		pinned := x509.NewCertPool()
		pinned.AddCert(c)
		if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: name, Roots: pinned, Intermediates: inter}); err != nil {
			return fmt.Errorf("server certificate does not verify against the pinned CA: %w", err)
		}
		return nil
	}
	if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		return fmt.Errorf("server's certificate chain has no CA matching --ca-fingerprint, and this host does not trust it: %w", err)
	}
	return nil
}

func postRegister(ctx context.Context, base *url.URL, conf *tls.Config, req apiv1.RegisterRequest) (*apiv1.RegisterResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: conf, Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true},
	}
	defer client.CloseIdleConnections()
	u := base.JoinPath("/api/v1/bootstrap/register")
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	res, err := client.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("register with %s: %w", base, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("register with %s: read answer: %w", base, err)
	}
	if res.StatusCode/100 != 2 {
		var e apiv1.Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("register with %s: refused: %s (HTTP %d)", base, e.Error, res.StatusCode)
		}
		return nil, fmt.Errorf("register with %s: HTTP %s", base, res.Status)
	}
	var out apiv1.RegisterResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("register with %s: decode answer: %w", base, err)
	}
	return &out, nil
}

// checkRegisterResponse checks that the answer is usable and, with a pin,
// that the CA returned is the pinned one (the HTTPS certificate was
// checked at the handshake, see verifyPinned).
func checkRegisterResponse(r *apiv1.RegisterResponse, pub ed25519.PublicKey, pin []byte, now time.Time) (*x509.Certificate, *x509.Certificate, error) {
	if r.UUID == "" {
		return nil, nil, errors.New("register: answer has no uuid")
	}
	cert, err := decodeCert([]byte(r.Certificate))
	if err != nil {
		return nil, nil, fmt.Errorf("register: answer certificate: %w", err)
	}
	caCert, err := decodeCert([]byte(r.CA))
	if err != nil {
		return nil, nil, fmt.Errorf("register: answer CA: %w", err)
	}
	if certPub, ok := cert.PublicKey.(ed25519.PublicKey); !ok || !certPub.Equal(pub) {
		return nil, nil, errors.New("register: the certificate returned is not for this envoy's key")
	}
	if pin != nil {
		if sum := sha256.Sum256(caCert.Raw); !bytes.Equal(sum[:], pin) {
			return nil, nil, errors.New("register: the CA returned does not match --ca-fingerprint")
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, nil, fmt.Errorf("register: the certificate returned does not verify against the CA returned: %w", err)
	}
	if _, err := pemkey.ParsePublic([]byte(r.ServerPublicKey)); err != nil {
		return nil, nil, fmt.Errorf("register: answer server_public_key: %w", err)
	}
	return cert, caCert, nil
}

// GRPCAddress resolves the grpc_address of a registration answer: a
// missing or unspecified host means host, the host of the registration URL.
func GRPCAddress(addr, host string) (string, error) {
	if addr == "" {
		return net.JoinHostPort(host, "1530"), nil
	}
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("register: answer grpc_address %q: %w", addr, err)
	}
	if h == "" || h == "0.0.0.0" || h == "::" {
		h = host
	}
	return net.JoinHostPort(h, port), nil
}
