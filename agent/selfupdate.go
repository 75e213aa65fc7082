package agent

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/vigo-enroll/vigo/agent/update"
	"github.com/vigo-enroll/vigo/schemas/pemkey"
)

// updateTimeout bounds one self-update (metadata and download).
const updateTimeout = 10 * time.Minute

// SelfUpdate returns the Config.Update function of `vigo run`: it
// replaces binary with the build the server announces and execs it with
// args. Each call reads the agent's current enrollment (enr), so that it
// uses the current client certificate, server and pinned signing key also
// after a renewal or a rebootstrap.
//
// After a successful update the new binary runs with the same arguments:
// `vigo run` carries on as the new version, and `vigo run --once` checks in
// once more, now reporting the new version, and exits with that check-in's
// result. On Windows the process cannot replace itself: Update returns
// update.ErrRestartRequired, and the service manager starts the new binary.
func SelfUpdate(enr func() *Enrollment, version, binary string, args []string, logger *slog.Logger) func(ctx context.Context, want update.Want) error {
	return func(ctx context.Context, want update.Want) error {
		e := enr()
		key, err := pinnedSigningKey(e)
		if err != nil {
			return err
		}
		client := &http.Client{
			Timeout: updateTimeout,
			Transport: &http.Transport{
				// The envoy's mTLS identity; the server verified against the
				// CA saved at registration or, for an operator's HTTPS
				// certificate, the system's roots: the download is checked
				// against the digest of the mTLS check-in anyway.
				TLSClientConfig:   e.HTTPSTLSConfig(),
				Proxy:             http.ProxyFromEnvironment,
				ForceAttemptHTTP2: true,
			},
		}
		defer client.CloseIdleConnections()
		u := &update.Updater{
			CurrentVersion: version,
			BinaryPath:     binary,
			Client:         client,
			ServerURL:      e.File.ServerURL,
			SigningKey:     key,
			// No key pinned at registration and a signed build: the key the
			// server serves over mTLS is verified and pinned for good.
			PinSigningKey: e.PinAgentSigningKey,
			Logger:        logger,
			Args:          args,
		}
		ctx, cancel := context.WithTimeout(ctx, updateTimeout)
		defer cancel()
		return u.Update(ctx, want)
	}
}

// pinnedSigningKey returns the agent signing key pinned at registration, or
// nil when the server had none then.
func pinnedSigningKey(e *Enrollment) (ed25519.PublicKey, error) {
	if e.File.AgentSigningKey == "" {
		return nil, nil
	}
	key, err := pemkey.ParsePublic([]byte(e.File.AgentSigningKey))
	if err != nil {
		return nil, fmt.Errorf("pinned agent signing key in %s: %w", e.Dir, err)
	}
	return key, nil
}
