package gitsync

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports writes down the package's dependency rules: go-git is
// imported by git.go only (its types never leave that file), and neither
// CUE nor the policy package is imported anywhere in gitsync.
func TestImports(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := filepath.Glob("gitsynctest/*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(files, sub...) {
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			switch {
			case strings.HasPrefix(p, "github.com/go-git/") && f != "git.go":
				t.Errorf("%s imports %s: only git.go may import go-git", f, p)
			case strings.HasPrefix(p, "cuelang.org/"), strings.HasSuffix(p, "/vigo/policy"), strings.Contains(p, "/vigo/server"):
				t.Errorf("%s imports %s: gitsync knows nothing of CUE, policy or the server", f, p)
			}
		}
	}
}
