package policy

import (
	"go/build"
	"strings"
	"testing"
)

// TestImports keeps the package pure: standard library (without network,
// database, files, logging or processes), CUE and the schemas package only.
// (CUE itself links some of these; the rule is about what policy uses.)
func TestImports(t *testing.T) {
	t.Parallel()
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{"net/http", "net/rpc", "database/", "log", "os", "cuelang.org/go/cue/load", "cuelang.org/go/mod/"}
	for _, imp := range pkg.Imports {
		for _, f := range forbidden {
			if imp == f || strings.HasPrefix(imp, f+"/") || strings.HasSuffix(f, "/") && strings.HasPrefix(imp, f) {
				t.Errorf("policy imports %s, which it must not", imp)
			}
		}
		first, _, _ := strings.Cut(imp, "/")
		switch {
		case !strings.Contains(first, "."):
		case strings.HasPrefix(imp, "cuelang.org/go/cue"):
		case imp == "github.com/vigo-enroll/vigo/schemas":
		default:
			t.Errorf("policy imports %s: only the standard library, cuelang.org/go/cue/... and schemas are allowed", imp)
		}
	}
}
