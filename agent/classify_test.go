package agent

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigo-enroll/vigo/schemas/agentpb"
)

// TestClassifyByRefusalNotWords checks that the agent decides by the
// structured refusal the server sends, whatever the message says: a
// reworded message must not turn a final refusal into endless retries, nor
// a retryable error into a stop.
func TestClassifyByRefusalNotWords(t *testing.T) {
	enr := &Enrollment{File: File{UUID: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11"}}
	tests := []struct {
		name    string
		err     error
		revoked bool
	}{
		{"unknown, in other words", agentpb.RefusalEnvoyUnknown.Status(codes.Unauthenticated, "no such envoy here").Err(), true},
		{"revoked, in other words", agentpb.RefusalEnvoyRevoked.Status(codes.PermissionDenied, "gone").Err(), true},
		{"revoked, before structured refusals", status.Error(codes.PermissionDenied, "envoy x is revoked"), true},
		{"the old words without the refusal", status.Error(codes.Unauthenticated, "envoy x is unknown to this server"), false},
		{"clock skew", status.Error(codes.Unauthenticated, "check-in timestamp is 10m off the server's clock"), false},
		{"rate limited", status.Error(codes.ResourceExhausted, "too many requests"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Agent{}
			err := a.classify(enr, tt.err)
			var r *RevokedError
			if got := errors.As(err, &r); got != tt.revoked {
				t.Fatalf("classify(%v) = %v; revoked %v, want %v", tt.err, err, got, tt.revoked)
			}
		})
	}
}
