package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// HandshakeRefusedError says that the server refused the client
// certificate during the TLS handshake.
type HandshakeRefusedError struct {
	// Alert is the TLS alert the server sent, e.g. "bad certificate".
	Alert string
}

func (e *HandshakeRefusedError) Error() string {
	return "the server refused this envoy's certificate at the TLS handshake: " + e.Alert
}

// ProbeHandshake connects to addr with conf and tells whether the server
// accepts the client certificate. In TLS 1.3 the client finishes its side
// of the handshake before the server has judged the client certificate, so
// a refusal only shows on the first read: a gRPC server sends its settings
// right after accepting, or a TLS alert when it refuses. It returns nil
// when accepted, a *HandshakeRefusedError when refused, and another error
// when the server could not be reached.
func ProbeHandshake(ctx context.Context, addr string, conf *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conf = conf.Clone()
	conf.NextProtos = []string{"h2"} // gRPC servers refuse connections without it
	d := tls.Dialer{Config: conf}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if alert, ok := certAlert(err); ok {
			return &HandshakeRefusedError{Alert: alert}
		}
		return fmt.Errorf("probe %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	}
	// Speak first like an HTTP/2 client (preface + empty SETTINGS), so
	// that any HTTP/2 server answers.
	_, _ = c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		if alert, ok := certAlert(err); ok {
			return &HandshakeRefusedError{Alert: alert}
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("probe %s: no answer after the handshake", addr)
		}
		return fmt.Errorf("probe %s: %w", addr, err)
	}
	return nil
}

// certAlert recognises the TLS alerts a server sends when it refuses a
// client certificate.
func certAlert(err error) (string, bool) {
	msg := err.Error()
	for _, a := range []string{"bad certificate", "certificate required", "unknown certificate authority",
		"revoked certificate", "expired certificate", "unsupported certificate", "certificate unknown"} {
		if strings.Contains(msg, "remote error: tls: "+a) {
			return a, true
		}
	}
	return "", false
}
