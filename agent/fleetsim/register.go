package fleetsim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

// ParseServer turns HOST:PORT or https://HOST[:PORT] into a base URL
// (default port 8443).
func ParseServer(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("parse server: empty address")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("parse server %q: %w", s, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("parse server %q: want https://HOST[:PORT]", s)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "8443")
	}
	u.Path, u.RawQuery, u.Fragment = "", "", ""
	return u, nil
}

// registrar registers envoys over keep-alive HTTPS connections, one
// client per server.
type registrar struct {
	servers []*url.URL
	clients []*http.Client
}

func newRegistrar(cfg *Config, servers []*url.URL) *registrar {
	r := &registrar{servers: servers}
	for range servers {
		conf := &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
		if cfg.Insecure {
			// --insecure: the operator chose not to verify the HTTPS
			// certificate (bench servers usually have a self-signed CA).
			conf.InsecureSkipVerify = true
		}
		r.clients = append(r.clients, &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			TLSClientConfig:     conf,
			MaxIdleConns:        cfg.RegisterWorkers,
			MaxIdleConnsPerHost: cfg.RegisterWorkers,
			IdleConnTimeout:     time.Minute,
		}})
	}
	return r
}

func (r *registrar) close() {
	for _, c := range r.clients {
		c.CloseIdleConnections()
	}
}

// register creates a key and registers hostname with server number srv.
// It returns the envoy and the CA certificate (DER) of the answer.
func (r *registrar) register(ctx context.Context, srv int, hostname string) (*Envoy, []byte, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("register %s: generate key: %w", hostname, err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: hostname}, DNSNames: []string{hostname},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("register %s: create CSR: %w", hostname, err)
	}
	body, err := json.Marshal(apiv1.RegisterRequest{
		Hostname: hostname, OS: "linux", Arch: runtime.GOARCH,
		PublicKey: string(pemkey.MarshalPublic(pub)),
		CSR:       string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("register %s: %w", hostname, err)
	}
	base := r.servers[srv]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base.JoinPath("/api/v1/bootstrap/register").String(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, fmt.Errorf("register %s: %w", hostname, err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := r.clients[srv].Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("register %s with %s: %w", hostname, base.Host, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("register %s with %s: read answer: %w", hostname, base.Host, err)
	}
	if res.StatusCode/100 != 2 {
		var e apiv1.Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return nil, nil, fmt.Errorf("register %s with %s: refused: %s (HTTP %d)", hostname, base.Host, e.Error, res.StatusCode)
		}
		return nil, nil, fmt.Errorf("register %s with %s: HTTP %s", hostname, base.Host, res.Status)
	}
	var out apiv1.RegisterResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, nil, fmt.Errorf("register %s with %s: decode answer: %w", hostname, base.Host, err)
	}
	return EnvoyFromRegistration(&out, key, base.String())
}

// EnvoyFromRegistration checks the answer r to a registration of key with
// the server at base URL serverURL and returns the envoy and the CA
// certificate (DER) of the answer.
func EnvoyFromRegistration(r *apiv1.RegisterResponse, key ed25519.PrivateKey, serverURL string) (*Envoy, []byte, error) {
	base, err := ParseServer(serverURL)
	if err != nil {
		return nil, nil, fmt.Errorf("register: %w", err)
	}
	certDER, err := pemBytes(r.Certificate, "CERTIFICATE")
	if err != nil {
		return nil, nil, fmt.Errorf("register: answer certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, nil, fmt.Errorf("register: answer certificate: %w", err)
	}
	if p, ok := cert.PublicKey.(ed25519.PublicKey); !ok || !p.Equal(key.Public()) {
		return nil, nil, errors.New("register: the certificate returned is not for this envoy's key")
	}
	caDER, err := pemBytes(r.CA, "CERTIFICATE")
	if err != nil {
		return nil, nil, fmt.Errorf("register: answer CA: %w", err)
	}
	serverKey, err := pemkey.ParsePublic([]byte(r.ServerPublicKey))
	if err != nil {
		return nil, nil, fmt.Errorf("register: answer server_public_key: %w", err)
	}
	addr, err := agent.GRPCAddress(r.GRPCAddress, base.Hostname())
	if err != nil {
		return nil, nil, err
	}
	return &Envoy{UUID: r.UUID, Hostname: r.Hostname, Key: key, Cert: certDER, Server: base.String(),
		GRPCAddress: addr, ServerPublicKey: serverKey}, caDER, nil
}

func pemBytes(s, typ string) ([]byte, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != typ {
		return nil, fmt.Errorf("not a PEM %s", typ)
	}
	return b.Bytes, nil
}
