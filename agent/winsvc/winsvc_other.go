//go:build !windows

package winsvc

import "context"

// Run runs loop until it returns: outside Windows there is no service
// manager handshake to answer.
func Run(ctx context.Context, _ Config, loop func(context.Context) error) error {
	return loop(ctx)
}
