//go:build windows

package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/agent/service"
	"github.com/vigo-enroll/vigo/agent/winsvc"
)

// serve runs the check-in loop. Started by the Windows service manager, it
// answers the manager's handshake (a service that does not is killed after
// 30 s) and stops on its Stop and Shutdown requests; started from a console,
// it runs until ctx is done (Ctrl+C).
func serve(ctx context.Context, logger *slog.Logger, loop func(context.Context) error) error {
	return winsvc.Run(ctx, winsvc.Config{Name: service.Name, Logger: logger, ExitCode: func(err error) uint32 {
		if _, ok := errors.AsType[*agent.RevokedError](err); ok {
			return agent.ExitRevoked
		}
		return 1
	}}, loop)
}
