// Package winsvc lets `vigo run` run as a Windows service: it answers the
// service control manager's handshake (a service that does not report
// "running" is killed after 30 seconds), stops the check-in loop on the
// manager's Stop and Shutdown requests, and reports the loop's failure as
// a service-specific exit code, so that the failure actions registered by
// agent/service (restart after 5 s, 10 s, 60 s) apply.
//
// On other systems, and on Windows when started from a console, Run just
// runs the loop: service managers there stop the agent with a signal.
package winsvc

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// DefaultStopTimeout is how long a stop request waits for the loop to
// return when Config.StopTimeout is zero.
const DefaultStopTimeout = 20 * time.Second

// ErrStopTimeout is returned when the loop did not return within the stop
// timeout after a stop request.
var ErrStopTimeout = errors.New("check-in loop did not stop in time")

// Config configures Run. Zero values are defaults.
type Config struct {
	// Name is the service's name, as registered with the service manager.
	Name string
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger
	// ExitCode maps the loop's error to the service-specific exit code
	// reported to the service manager; nil reports 1 for every error.
	ExitCode func(error) uint32
	// StopTimeout bounds the wait for the loop after a stop request
	// (default DefaultStopTimeout).
	StopTimeout time.Duration
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger.With("component", "winsvc")
}

func (c Config) exitCode(err error) uint32 {
	if err == nil {
		return 0
	}
	if c.ExitCode != nil {
		if code := c.ExitCode(err); code != 0 {
			return code
		}
	}
	return 1
}

// supervise runs loop under ctx until it returns, or until stop is closed:
// then it cancels the loop's context and waits up to cfg.StopTimeout for
// it. A loop stopped on request returns nil; one that outlives the timeout
// yields ErrStopTimeout.
func supervise(ctx context.Context, cfg Config, stop <-chan struct{}, loop func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- loop(ctx) }()
	select {
	case err := <-done:
		return err
	case <-stop:
	}
	cfg.logger().Info("stop requested by the service manager", "service", cfg.Name)
	cancel()
	timeout := cfg.StopTimeout
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case <-t.C:
		return ErrStopTimeout
	}
}
