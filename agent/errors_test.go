package agent

import "testing"

func TestRevokedErrorNamesTheEnvoyOnce(t *testing.T) {
	const u = "554bb1d4-3ea6-4586-8021-66f2c260c534"
	for _, tc := range []struct{ reason, want string }{
		{"envoy " + u + " is revoked: disk stolen (policy 77fa765)", "envoy " + u + " is revoked: disk stolen (policy 77fa765)"},
		{"certificate expired", "envoy " + u + " is refused by the server: certificate expired"},
	} {
		if got := (&RevokedError{UUID: u, Reason: tc.reason}).Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
