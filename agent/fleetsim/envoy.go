package fleetsim

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/schemas/atomicfile"
)

// Envoy is one simulated envoy: its own Ed25519 key, the client
// certificate the server issued for it, and what it pinned at
// registration.
type Envoy struct {
	// UUID and Hostname are the enrolled identity.
	UUID     string
	Hostname string
	// Key is the envoy's private key; it signs check-ins and the TLS
	// handshake.
	Key ed25519.PrivateKey
	// Cert is the client certificate (DER) issued at registration.
	Cert []byte
	// Server is the base URL the envoy registered with.
	Server string
	// GRPCAddress is where it checks in (host:port).
	GRPCAddress string
	// ServerPublicKey is the pinned key that signs check-in responses.
	ServerPublicKey ed25519.PublicKey
	// sessions keeps the envoy's TLS session when the run resumes them.
	sessions tls.ClientSessionCache

	tlsCert *tls.Certificate
}

// TLSCertificate returns the envoy's client certificate for a TLS
// handshake.
func (e *Envoy) TLSCertificate() (tls.Certificate, error) {
	if e.tlsCert != nil {
		return *e.tlsCert, nil
	}
	leaf, err := x509.ParseCertificate(e.Cert)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse certificate of envoy %s: %w", e.UUID, err)
	}
	c := tls.Certificate{Certificate: [][]byte{e.Cert}, PrivateKey: e.Key, Leaf: leaf}
	e.tlsCert = &c
	return c, nil
}

// SignCheckin returns a check-in request of the envoy with a fresh random
// nonce, timestamped now and signed with the envoy's key, exactly as the
// agent sends it.
func (e *Envoy) SignCheckin(now time.Time) *agentpb.CheckinRequest {
	req := &agentpb.CheckinRequest{
		Uuid: e.UUID, Hostname: e.Hostname, AgentVersion: AgentVersion, Os: "linux", Arch: "amd64",
		TimestampUnixNano: now.UnixNano(),
	}
	req.Sign(e.Key)
	return req
}

// VerifyResponse checks that resp is the pinned server's answer to req.
func (e *Envoy) VerifyResponse(req *agentpb.CheckinRequest, resp *agentpb.CheckinResponse) error {
	return agentpb.VerifyResponse(e.ServerPublicKey, req, resp)
}

// AgentVersion is the agent version the simulated envoys report.
const AgentVersion = "fleetsim"

// State is what --state saves: the registered envoys and the CA that
// issued their certificates, so that a later run skips registration.
type State struct {
	// CA is the CA certificate (DER) returned at registration; check-in
	// connections verify the server against it.
	CA     []byte
	Envoys []*Envoy
}

type stateFile struct {
	Version int          `json:"version"`
	CA      []byte       `json:"ca"`
	Envoys  []stateEnvoy `json:"envoys"`
	Saved   time.Time    `json:"saved"`
}

type stateEnvoy struct {
	UUID            string `json:"uuid"`
	Hostname        string `json:"hostname"`
	Seed            []byte `json:"key_seed"`
	Cert            []byte `json:"cert"`
	Server          string `json:"server"`
	GRPCAddress     string `json:"grpc_address"`
	ServerPublicKey []byte `json:"server_public_key"`
}

// Save writes the state to path (mode 0600: it holds private keys)
// through a temporary file and a rename.
func (s *State) Save(path string) error {
	f := stateFile{Version: 1, CA: s.CA, Saved: time.Now().UTC(), Envoys: make([]stateEnvoy, len(s.Envoys))}
	for i, e := range s.Envoys {
		f.Envoys[i] = stateEnvoy{UUID: e.UUID, Hostname: e.Hostname, Seed: e.Key.Seed(), Cert: e.Cert,
			Server: e.Server, GRPCAddress: e.GRPCAddress, ServerPublicKey: e.ServerPublicKey}
	}
	data, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("save state %s: %w", path, err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// LoadState reads a state saved by Save.
func LoadState(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("load state %s: %w", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("load state %s: unknown version %d", path, f.Version)
	}
	s := &State{CA: f.CA, Envoys: make([]*Envoy, len(f.Envoys))}
	for i, se := range f.Envoys {
		if len(se.Seed) != ed25519.SeedSize || len(se.ServerPublicKey) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("load state %s: envoy %d: bad key length", path, i)
		}
		s.Envoys[i] = &Envoy{UUID: se.UUID, Hostname: se.Hostname, Key: ed25519.NewKeyFromSeed(se.Seed), Cert: se.Cert,
			Server: se.Server, GRPCAddress: se.GRPCAddress, ServerPublicKey: se.ServerPublicKey}
	}
	return s, nil
}
