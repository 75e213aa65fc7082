//go:build windows

package winsvc

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/windows/svc"
)

// Run runs loop. Started by the service control manager, it reports the
// service running, stops the loop on Stop or Shutdown, and reports the
// loop's error as the service's exit code; started from a console, it just
// runs loop until ctx is done.
func Run(ctx context.Context, cfg Config, loop func(context.Context) error) error {
	isService, err := svc.IsWindowsService()
	if err != nil {
		return fmt.Errorf("detect the Windows service manager: %w", err)
	}
	if !isService {
		return loop(ctx)
	}
	h := &handler{ctx: ctx, cfg: cfg, loop: loop}
	if err := svc.Run(cfg.Name, h); err != nil {
		return fmt.Errorf("run as Windows service %s: %w", cfg.Name, err)
	}
	return h.err
}

type handler struct {
	ctx  context.Context
	cfg  Config
	loop func(context.Context) error
	err  error // the loop's result, read after svc.Run returns
}

// Execute implements svc.Handler.
func (h *handler) Execute(_ []string, r <-chan svc.ChangeRequest, s chan<- svc.Status) (bool, uint32) {
	const accepts = svc.AcceptStop | svc.AcceptShutdown
	s <- svc.Status{State: svc.StartPending}
	stop := make(chan struct{})
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var once sync.Once
		for {
			select {
			case <-quit:
				return
			case c := <-r:
				var st svc.Status
				switch c.Cmd {
				case svc.Interrogate:
					st = c.CurrentStatus
				case svc.Stop, svc.Shutdown:
					st = svc.Status{State: svc.StopPending, WaitHint: uint32(h.stopTimeout().Milliseconds())}
					once.Do(func() { close(stop) })
				default:
					continue
				}
				select {
				case s <- st:
				case <-quit:
					return
				}
			}
		}
	}()
	s <- svc.Status{State: svc.Running, Accepts: accepts}
	h.cfg.logger().Info("running as a Windows service", "service", h.cfg.Name)
	h.err = supervise(h.ctx, h.cfg, stop, h.loop)
	close(quit)
	wg.Wait()
	if h.err != nil {
		// Service-specific: the failure actions restart the service.
		return true, h.cfg.exitCode(h.err)
	}
	return false, 0
}

func (h *handler) stopTimeout() time.Duration {
	if h.cfg.StopTimeout > 0 {
		return h.cfg.StopTimeout
	}
	return DefaultStopTimeout
}
