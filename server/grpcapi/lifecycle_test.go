package grpcapi_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/grpcapi"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

// TestNewStartsNothing: New only builds the server; the background loops
// start with Serve (or Run), and Close after New alone is fine.
func TestNewStartsNothing(t *testing.T) {
	// A store, a CA and a key of its own, with no server running in the
	// process: a test environment's servers start and end goroutines of
	// their own at any time, which the count below would see.
	dir := t.TempDir()
	st, err := sqlitestore.Open(t.Context(), filepath.Join(dir, "vigo.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	authority, err := ca.LoadOrCreate(ca.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cfg := grpcapi.Config{Store: st, CA: authority, SigningKey: key}
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
