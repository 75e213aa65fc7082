// Command vigoload is the fleet simulator of Vigo Enroll: it registers
// simulated envoys with running servers, drives their signed check-ins and
// reports throughput, latency and the servers' memory. It is a separate
// binary so that the server links no agent code.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	root := newRootCmd(os.Stdout, os.Stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "vigoload: "+err.Error())
		var ce *codeError
		if errors.As(err, &ce) {
			os.Exit(ce.code)
		}
		os.Exit(1)
	}
}

// codeError carries an exit code: 2 for a usage error.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }
