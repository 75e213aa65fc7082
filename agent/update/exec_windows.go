//go:build windows

package update

// defaultExec cannot replace a running process on Windows: the caller exits
// and the service manager (restart on failure) starts the new binary.
func defaultExec(path string, argv, env []string) error {
	return ErrRestartRequired
}
