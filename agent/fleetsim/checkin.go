package fleetsim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"

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
		RootCAs:      roots,
		ServerName:   host,
		Certificates: []tls.Certificate{cert},
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
