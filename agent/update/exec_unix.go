//go:build !windows

package update

import "syscall"

// defaultExec replaces the process image; it returns only on failure.
func defaultExec(path string, argv, env []string) error {
	return syscall.Exec(path, argv, env)
}
