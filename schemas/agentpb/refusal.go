package agentpb

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Refusal is the machine-readable reason of a refused check-in or renewal.
// The server sends it in the gRPC status details as a google.rpc.ErrorInfo
// (reason: the Refusal, domain: RefusalDomain), beside a message for
// humans; the agent decides what to do by the Refusal alone, never by the
// message's words.
type Refusal string

// RefusalDomain is the ErrorInfo domain of every Refusal.
const RefusalDomain = "enroll.vigo"

// The refusals an agent acts on. An empty Refusal means the error carries
// none (another error, or a server from before refusals were structured).
const (
	// RefusalEnvoyUnknown: this server has no envoy with the certificate's
	// UUID. Final: the agent stops and says to register again.
	RefusalEnvoyUnknown Refusal = "ENVOY_UNKNOWN"
	// RefusalEnvoyRevoked: the envoy is revoked (by policy, an operator,
	// or replaced by a new registration of its hostname). Final.
	RefusalEnvoyRevoked Refusal = "ENVOY_REVOKED"
	// RefusalCertificateNotCurrent: the envoy was renewed and this
	// connection presents an older certificate. The agent reconnects with
	// its current one.
	RefusalCertificateNotCurrent Refusal = "CERTIFICATE_NOT_CURRENT"
	// RefusalNotAnEnvoyCertificate: the client certificate names no envoy.
	RefusalNotAnEnvoyCertificate Refusal = "NOT_AN_ENVOY_CERTIFICATE"
)

// Status returns a gRPC status with code and msg that carries r.
func (r Refusal) Status(code codes.Code, msg string) *status.Status {
	st := status.New(code, msg)
	if r == "" {
		return st
	}
	d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: string(r), Domain: RefusalDomain})
	if err != nil {
		return st // only for an OK code, which a refusal never has
	}
	return d
}

// RefusalOf returns the Refusal carried by a gRPC error, or "" when it
// carries none.
func RefusalOf(err error) Refusal {
	var se interface{ GRPCStatus() *status.Status }
	if err == nil || !errors.As(err, &se) {
		return ""
	}
	for _, d := range se.GRPCStatus().Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == RefusalDomain {
			return Refusal(ei.GetReason())
		}
	}
	return ""
}
