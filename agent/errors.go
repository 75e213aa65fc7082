package agent

import (
	"errors"
	"fmt"
	"strings"
)

// ExitRevoked is the exit code of `vigo run` when the server refuses this
// envoy for good (revoked, replaced or unknown).
const ExitRevoked = 3

// ErrNotRegistered is returned when the config folder holds no enrollment.
var ErrNotRegistered = errors.New("this host is not registered (run vigo register)")

// RevokedError says that the server refuses this envoy for good.
type RevokedError struct {
	UUID string
	// Reason is the server's message, or a description of the handshake
	// refusal.
	Reason string
}

func (e *RevokedError) Error() string {
	if strings.Contains(e.Reason, e.UUID) {
		return e.Reason // the server's message already names the envoy
	}
	return fmt.Sprintf("envoy %s is refused by the server: %s", e.UUID, e.Reason)
}
