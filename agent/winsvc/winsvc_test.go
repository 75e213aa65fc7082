package winsvc

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSupervise(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	tests := []struct {
		name string
		stop bool // close the stop channel once the loop runs
		loop func(ctx context.Context) error
		want error
	}{
		{name: "loop fails", loop: func(context.Context) error { return boom }, want: boom},
		{name: "loop ends", loop: func(context.Context) error { return nil }, want: nil},
		{name: "stopped", stop: true, loop: func(ctx context.Context) error { <-ctx.Done(); return nil }, want: nil},
		{name: "stopped, loop returns ctx error", stop: true, loop: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, want: nil},
		{name: "stopped, loop fails while stopping", stop: true, loop: func(ctx context.Context) error { <-ctx.Done(); return boom }, want: boom},
		{name: "stop timeout", stop: true, loop: func(context.Context) error { <-stuck; return nil }, want: ErrStopTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stop := make(chan struct{})
			started := make(chan struct{})
			loop := func(ctx context.Context) error {
				close(started)
				return tt.loop(ctx)
			}
			if tt.stop {
				go func() { <-started; close(stop) }()
			}
			err := supervise(context.Background(), Config{Name: "vigo-envoy", StopTimeout: 50 * time.Millisecond}, stop, loop)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Errorf("supervise: got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	revoked := errors.New("revoked")
	cfg := Config{ExitCode: func(err error) uint32 {
		if errors.Is(err, revoked) {
			return 3
		}
		return 0 // falls back to 1
	}}
	for _, tt := range []struct {
		name string
		err  error
		want uint32
	}{{"nil", nil, 0}, {"mapped", revoked, 3}, {"unmapped", errors.New("x"), 1}} {
		if got := cfg.exitCode(tt.err); got != tt.want {
			t.Errorf("%s: exitCode = %d, want %d", tt.name, got, tt.want)
		}
	}
	if got := (Config{}).exitCode(errors.New("x")); got != 1 {
		t.Errorf("default exitCode = %d, want 1", got)
	}
}

func TestRunOutsideTheServiceManager(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Run(ctx, Config{Name: "vigo-envoy"}, func(ctx context.Context) error { return ctx.Err() })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run: got %v, want the loop's context.Canceled", err)
	}
}
