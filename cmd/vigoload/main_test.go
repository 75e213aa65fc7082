package main

import (
	"os"
	"testing"

	"github.com/vigo-enroll/vigo/policy/sandbox"
)

// TestMain lets the test binary be the policy evaluator's child process,
// for the servers these tests start in-process.
func TestMain(m *testing.M) {
	sandbox.RunIfChild()
	os.Exit(m.Run())
}
