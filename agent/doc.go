// Package agent is the envoy side of Vigo Enroll: registration over HTTPS,
// the check-in loop over gRPC with mutual TLS, certificate renewal and
// rebootstrap. It imports nothing of the server (see deps_test.go) so that
// the agent binary stays small.
//
// # Files
//
// Everything lives in one folder (default /etc/vigo-envoy, 0700), each file
// written atomically (temporary file, fsync, rename):
//
//	config      JSON, see File: server URL, gRPC address, TLS server name,
//	            uuid, hostname, file names, check-in interval, pinned keys
//	key.pem     the envoy's Ed25519 private key, PKCS#8 PEM, mode 0600
//	cert.pem    the envoy's client certificate, PEM
//	ca.pem      the server's CA certificate, PEM: every contact after the
//	            first verifies the server against it
//	status      JSON, see Status: time and outcome of the last check-in
//
// # Trust on first contact
//
// Register without a CA fingerprint trusts the server like `curl -k` does
// (the bootstrap one-liner already did). A fingerprint (hex SHA-256 of
// the CA certificate's DER, as `vigocli` and the server log show it) pins
// Vigo's CA: the CA that signs envoy certificates and the gRPC server's
// certificate. Before anything (a token) is sent, the HTTPS server must
// present a certificate that verifies against that CA, found in its chain,
// or, when its HTTPS listener has an operator's certificate (e.g. from
// Let's Encrypt), against the system's roots (RegisterParams.RootCAs); the
// CA returned in the answer must match the pin either way, and it alone
// authenticates the gRPC server afterwards. A re-registration or a
// rebootstrap pins the CA saved at the previous registration.
//
// # Revocation
//
// A revoked envoy learns it from a PERMISSION_DENIED answer on an open
// connection (the message says why), or from its certificate being refused
// at the TLS handshake, which carries no reason: after three handshake
// refusals in a row Run returns a *RevokedError. cmd/vigo exits with
// ExitRevoked (3) then.
package agent
