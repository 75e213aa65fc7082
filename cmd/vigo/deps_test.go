package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the agent binary small and free of server code: `go list
// -deps ./cmd/vigo` must name none of these.
func TestDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/vigo-enroll/vigo/cmd/vigo").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"cuelang.org/",
		"modernc.org/sqlite",
		"github.com/jackc/pgx",
		"github.com/go-git/",
		"github.com/vigo-enroll/vigo/server",
		"github.com/vigo-enroll/vigo/policy",
		"github.com/vigo-enroll/vigo/gitsync",
		"github.com/prometheus/",
		"github.com/fsnotify/",
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 10 {
		t.Fatalf("go list printed too little: %q", out)
	}
	for _, p := range pkgs {
		for _, f := range forbidden {
			if strings.HasPrefix(p, f) {
				t.Errorf("cmd/vigo depends on %s (forbidden prefix %s)", p, f)
			}
		}
	}
}
