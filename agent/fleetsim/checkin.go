package fleetsim

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"

	"github.com/vigo-enroll/vigo/schemas/agentpb"
)

// Dial opens a gRPC connection to addr (host:port) authenticated as e
// with mutual TLS 1.3, verifying the server against roots, and waits until
// it is ready. With TLS 1.3 the server judges the client certificate after
// the client has finished its handshake, so a server that refuses the
// envoy (revoked, superseded certificate) may show it here or only on the
// first call.
func Dial(ctx context.Context, e *Envoy, roots *x509.CertPool, addr string) (*grpc.ClientConn, error) {
	return dial(ctx, e, roots, addr, nil)
}

// dial is Dial, resuming e's TLS session when it keeps them and counting
// resumed handshakes in resumed (when not nil).
func dial(ctx context.Context, e *Envoy, roots *x509.CertPool, addr string, resumed *atomic.Int64) (*grpc.ClientConn, error) {
	cert, err := e.TLSCertificate()
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS13, // the check-in listener speaks only TLS 1.3
		ServerName:   host,
		Certificates: []tls.Certificate{cert},
		// The server is verified in VerifyConnection instead, each chain
		// once per run (see verifyServer).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.DidResume && resumed != nil {
				resumed.Add(1)
			}
			return verifyServer(cs, roots, host)
		},
		ClientSessionCache: e.sessions, // nil: no resumption
	}
	// passthrough: the address is used as is, no resolver round trip.
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(conf)),
		grpc.WithDisableServiceConfig(),
	)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if s == connectivity.TransientFailure || s == connectivity.Shutdown {
			cc.Close()
			return nil, fmt.Errorf("dial %s as envoy %s: connection failed (%s)", addr, e.UUID, s)
		}
		if !cc.WaitForStateChange(ctx, s) {
			cc.Close()
			return nil, fmt.Errorf("dial %s as envoy %s: %w", addr, e.UUID, ctx.Err())
		}
	}
	return cc, nil
}

// verified remembers the server chains already verified in this process,
// by roots, name and SHA-256 of the chain's DER. The simulator shares the
// machine's cores with the server it measures, and opens a connection per
// check-in when it has fewer connections than envoys: verifying the same
// server chain again at each one (two P-256 signatures) would be counted
// against the server. The server sees the same handshake either way.
var verified sync.Map

type verifiedKey struct {
	roots *x509.CertPool
	host  string
	sum   [sha256.Size]byte
}

// verifyServer verifies the server's chain as crypto/tls would (roots,
// host name, current time), or finds that the same chain was verified
// before and is still within its validity.
func verifyServer(cs tls.ConnectionState, roots *x509.CertPool, host string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	h := sha256.New()
	for _, c := range cs.PeerCertificates {
		h.Write(c.Raw)
	}
	key := verifiedKey{roots: roots, host: host}
	h.Sum(key.sum[:0])
	leaf := cs.PeerCertificates[0]
	if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("server certificate not valid now (%s to %s)", leaf.NotBefore, leaf.NotAfter)
	}
	if _, ok := verified.Load(key); ok {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host}); err != nil {
		return err
	}
	verified.Store(key, true)
	return nil
}

// Checkin sends one signed check-in of e over cc and verifies the answer
// against the server key e pinned at registration.
func Checkin(ctx context.Context, cc grpc.ClientConnInterface, e *Envoy, req *agentpb.CheckinRequest) (*agentpb.CheckinResponse, error) {
	resp, err := agentpb.NewAgentServiceClient(cc).Checkin(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := e.VerifyResponse(req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}
