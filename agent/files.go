package agent

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/vigo-enroll/vigo/schemas/atomicfile"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

// DefaultDir is the default config folder.
const DefaultDir = "/etc/vigo-envoy"

// File names inside the config folder.
const (
	ConfigName = "config"
	KeyName    = "key.pem"
	CertName   = "cert.pem"
	CAName     = "ca.pem"
	StatusName = "status"
)

// File is the content of DIR/config, written by Register. File names are
// relative to DIR.
type File struct {
	// ServerURL is the HTTPS base URL, e.g. https://vigo.example.com:8443.
	ServerURL string `json:"server_url"`
	// GRPCAddress is host:port of the gRPC check-in endpoint.
	GRPCAddress string `json:"grpc_address"`
	// ServerName is the name verified in the server's certificate on both
	// endpoints (the host of ServerURL).
	ServerName string `json:"server_name"`
	UUID       string `json:"uuid"`
	Hostname   string `json:"hostname"`
	KeyFile    string `json:"key_file"`
	CertFile   string `json:"cert_file"`
	CAFile     string `json:"ca_file"`
	// CheckinInterval is a Go duration; the server may change it in each
	// check-in answer.
	CheckinInterval string `json:"checkin_interval"`
	// ServerPublicKey (PEM, Ed25519) is pinned at registration: every
	// check-in answer must be signed by it.
	ServerPublicKey string `json:"server_public_key"`
	// AgentSigningKey (PEM, Ed25519), when the server has one, is the
	// offline key that signs agent binaries (for self-update).
	AgentSigningKey string    `json:"agent_signing_key,omitempty"`
	RegisteredAt    time.Time `json:"registered_at"`
}

// Status is the content of DIR/status, updated after each check-in.
type Status struct {
	LastCheckin time.Time `json:"last_checkin,omitzero"` // last successful one
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
}

// ReadFile reads DIR/config; ErrNotRegistered when it does not exist.
func ReadFile(dir string) (File, error) {
	var f File
	b, err := os.ReadFile(filepath.Join(dir, ConfigName))
	if errors.Is(err, fs.ErrNotExist) {
		return f, ErrNotRegistered
	}
	if err != nil {
		return f, fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("read config %s: %w", filepath.Join(dir, ConfigName), err)
	}
	return f, nil
}

// ReadStatus reads DIR/status (zero Status when absent).
func ReadStatus(dir string) (Status, error) {
	var s Status
	b, err := os.ReadFile(filepath.Join(dir, StatusName))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read status: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("read status: %w", err)
	}
	return s, nil
}

func writeJSON(path string, v any, perm os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.Write(path, append(b, '\n'), perm)
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func decodeCert(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// decodeCerts decodes every CERTIFICATE block of b (at least one).
func decodeCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

// WriteEnrollment saves an enrollment in dir: ca.pem, cert.pem, key.pem
// (0600), then config (f with the file names set), each atomically. The
// config goes last so that it never points at missing files.
func WriteEnrollment(dir string, f File, key ed25519.PrivateKey, cert, ca *x509.Certificate) error {
	keyPEM := pemkey.MarshalPrivate(key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save enrollment: %w", err)
	}
	f.KeyFile, f.CertFile, f.CAFile = KeyName, CertName, CAName
	for _, w := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{CAName, encodeCert(ca.Raw), 0o644},
		{CertName, encodeCert(cert.Raw), 0o644},
		{KeyName, keyPEM, 0o600},
	} {
		if err := atomicfile.Write(filepath.Join(dir, w.name), w.data, w.perm); err != nil {
			return fmt.Errorf("save enrollment: %w", err)
		}
	}
	if err := writeJSON(filepath.Join(dir, ConfigName), f, 0o644); err != nil {
		return fmt.Errorf("save enrollment: %w", err)
	}
	return nil
}

// writeCAs writes CA certificates to path (PEM) atomically.
func writeCAs(path string, cas []*x509.Certificate) error {
	var b []byte
	for _, c := range cas {
		b = append(b, encodeCert(c.Raw)...)
	}
	return atomicfile.Write(path, b, 0o644)
}
