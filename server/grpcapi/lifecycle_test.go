package grpcapi_test

import (
	"runtime"
	"testing"

	"github.com/vigo-enroll/vigo/server/grpcapi"
	"github.com/vigo-enroll/vigo/server/grpcapi/grpcapitest"
)

// TestNewStartsNothing: New only builds the server; the background loops
// start with Serve (or Run), and Close after New alone is fine.
func TestNewStartsNothing(t *testing.T) {
	env := grpcapitest.New(t, grpcapitest.Options{}) // a store, a CA and a key for the config
	var cfg grpcapi.Config
	env.Config(func(c grpcapi.Config) { cfg = c })
	before := runtime.NumGoroutine()
	srv, err := grpcapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A go statement counts at once: no need to wait for it to run.
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("New started %d goroutines", after-before)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close after New: %v", err)
	}
}
