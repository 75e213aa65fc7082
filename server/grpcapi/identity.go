package grpcapi

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/store"
)

// Envoy is the authenticated caller of a request, put in the request
// context by the auth interceptor.
type Envoy struct {
	UUID     string
	Hostname string
	// Serial is the serial (lower-case hex) of the client certificate
	// presented on this connection.
	Serial string
	// Certificate is the client certificate presented on this connection.
	Certificate *x509.Certificate

	entry *entry
}

type envoyKey struct{}

// EnvoyFromContext returns the envoy that made the request.
func EnvoyFromContext(ctx context.Context) (Envoy, bool) {
	e, ok := ctx.Value(envoyKey{}).(Envoy)
	return e, ok
}

func withEnvoy(ctx context.Context, e Envoy) context.Context {
	return context.WithValue(ctx, envoyKey{}, e)
}

// RefusedError is why the server refused an envoy's certificate, at the
// TLS handshake or per request. Its message is safe to show the envoy.
type RefusedError struct {
	UUID   string
	Code   codes.Code
	Reason agentpb.Refusal
	Msg    string
}

func (e *RefusedError) Error() string { return e.Msg }

// GRPCStatus lets status.FromError and the gRPC server map the error.
// The status carries Reason, which the agent acts on.
func (e *RefusedError) GRPCStatus() *status.Status { return e.Reason.Status(e.Code, e.Msg) }

// label is the reason as a metric label ("envoy_revoked").
func (e *RefusedError) label() string { return strings.ToLower(string(e.Reason)) }

// judge decides whether cert may act as the envoy described by en.
func judge(en *entry, uuid, serial string) *RefusedError {
	switch {
	case !en.known:
		return &RefusedError{UUID: uuid, Code: codes.Unauthenticated, Reason: agentpb.RefusalEnvoyUnknown,
			Msg: fmt.Sprintf("envoy %s is unknown to this server", uuid)}
	case en.status != store.StatusActive:
		return &RefusedError{UUID: uuid, Code: codes.PermissionDenied, Reason: agentpb.RefusalEnvoyRevoked, Msg: revokedMessage(en)}
	case en.serial != serial:
		return &RefusedError{UUID: uuid, Code: codes.Unauthenticated, Reason: agentpb.RefusalCertificateNotCurrent,
			Msg: fmt.Sprintf("certificate %s is not the current certificate of envoy %s (it was renewed); reconnect with the current one", serial, uuid)}
	}
	return nil
}

// revokedMessage reads like
// "envoy 1b4e… is revoked: decommissioned (policy 3f2a9c1)".
func revokedMessage(en *entry) string {
	reason := en.reason
	if reason == "" {
		reason = "no reason given"
	}
	msg := fmt.Sprintf("envoy %s is revoked: %s", en.uuid, reason)
	switch {
	case en.revokedRevision != "":
		msg += fmt.Sprintf(" (policy %s)", shortRevision(en.revokedRevision))
	case en.replacedBy != "":
		msg += fmt.Sprintf(" (replaced by %s)", en.replacedBy)
	}
	return msg
}

// identify checks a verified client certificate against the directory.
func (s *Server) identify(ctx context.Context, cert *x509.Certificate) (Envoy, error) {
	uuid, err := ca.EnvoyUUID(cert)
	if err != nil {
		return Envoy{}, &RefusedError{Code: codes.Unauthenticated, Reason: agentpb.RefusalNotAnEnvoyCertificate,
			Msg: "client certificate is not an envoy certificate: " + err.Error()}
	}
	serial := ca.SerialHex(cert)
	en, err := s.dir.get(ctx, uuid)
	if err == nil {
		en, err = s.dir.confirm(ctx, en, serial)
	}
	if err != nil {
		return Envoy{}, internal(codes.Unavailable, "envoy directory unavailable; retry later", err)
	}
	if r := judge(en, uuid, serial); r != nil {
		return Envoy{}, r
	}
	return Envoy{UUID: uuid, Hostname: en.hostname, Serial: serial, Certificate: cert, entry: en}, nil
}

// shortRevision abbreviates a policy revision for messages: a commit id to
// 7 characters, a local folder's "local@sha256:<hash>" to 7 of the hash.
func shortRevision(rev string) string {
	if h, ok := strings.CutPrefix(rev, "local@sha256:"); ok {
		if len(h) > 7 {
			h = h[:7]
		}
		return "local@sha256:" + h
	}
	if len(rev) > 7 {
		return rev[:7]
	}
	return rev
}
