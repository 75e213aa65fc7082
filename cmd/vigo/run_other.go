//go:build !windows

package main

import (
	"context"
	"log/slog"
)

// serve runs the check-in loop until ctx is done (SIGINT, SIGTERM). Outside
// Windows the service managers (systemd, launchd, rc.d, SMF) signal the
// process, so there is no handshake to answer.
func serve(ctx context.Context, _ *slog.Logger, loop func(context.Context) error) error {
	return loop(ctx)
}
