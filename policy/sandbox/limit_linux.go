package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// limitSelf caps the process's address space at what it maps now plus the
// memory budget: beyond it every allocation fails, and the Go runtime dies
// with "out of memory". A CPU-time limit backs up the parent's timer, should
// the parent be gone.
func limitSelf(l Limits) error {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return fmt.Errorf("read /proc/self/statm: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return fmt.Errorf("read /proc/self/statm: empty")
	}
	pages, err := strconv.ParseUint(fields[0], 10, 64)
	if err != nil {
		return fmt.Errorf("read /proc/self/statm: %w", err)
	}
	as := pages*uint64(os.Getpagesize()) + uint64(l.Memory)
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: as, Max: as}); err != nil {
		return fmt.Errorf("set RLIMIT_AS: %w", err)
	}
	cpu := uint64(l.Timeout.Seconds())*4 + 10
	if err := syscall.Setrlimit(syscall.RLIMIT_CPU, &syscall.Rlimit{Cur: cpu, Max: cpu}); err != nil {
		return fmt.Errorf("set RLIMIT_CPU: %w", err)
	}
	return nil
}

// setProcAttr makes the kernel kill the child when the parent dies, so that
// an evaluation never outlives the server that started it.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
