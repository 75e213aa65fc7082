package schemas_test

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// These tests write down the layout rules of CONVENTIONS.md so that they
// hold without anyone remembering them. They live in schemas, the bottom of
// the dependency graph, and check the whole module.

const module = "github.com/vigo-enroll/vigo"

type pkg struct {
	ImportPath string
	Dir        string
	Name       string
	Doc        string
	GoFiles    []string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var ps []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if len(ps) < 10 {
		t.Fatalf("go list found only %d packages", len(ps))
	}
	return ps
}

func under(path, dir string) bool {
	return path == module+"/"+dir || strings.HasPrefix(path, module+"/"+dir+"/")
}

func TestDependencyDirection(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, imp := range p.Imports {
			switch {
			case under(p.ImportPath, "policy") && strings.HasPrefix(imp, module) && !under(imp, "schemas") && !under(imp, "policy"):
				t.Errorf("%s imports %s: policy may import only schemas of this module", p.ImportPath, imp)
			case under(p.ImportPath, "gitsync") && (strings.HasPrefix(imp, "cuelang.org") || under(imp, "policy") || under(imp, "server")):
				t.Errorf("%s imports %s: gitsync knows nothing of CUE, policy or the server", p.ImportPath, imp)
			case strings.HasPrefix(p.ImportPath, module+"/server/") && !strings.HasSuffix(p.ImportPath, "test") && imp == module+"/server":
				t.Errorf("%s imports the server root", p.ImportPath)
			case imp == "github.com/spf13/cobra" && !under(p.ImportPath, "cmd"):
				t.Errorf("%s imports cobra: only cmd/ may", p.ImportPath)
			case under(p.ImportPath, "schemas") && strings.HasPrefix(imp, module) && !under(imp, "schemas"):
				t.Errorf("%s imports %s: schemas is the bottom layer", p.ImportPath, imp)
			}
		}
		if under(p.ImportPath, "agent") {
			for _, d := range p.Deps {
				if under(d, "server") || under(d, "policy") || under(d, "gitsync") || strings.HasPrefix(d, "cuelang.org") ||
					strings.HasPrefix(d, "modernc.org/sqlite") || strings.HasPrefix(d, "github.com/go-git") || strings.HasPrefix(d, "github.com/jackc/pgx") {
					t.Errorf("%s depends on %s: the agent must stay small", p.ImportPath, d)
				}
			}
		}
	}
}

// TestGoGitStaysInOneFile checks that go-git is imported by gitsync/git.go only.
func TestGoGitStaysInOneFile(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, f := range p.GoFiles {
			file, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, f), nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range file.Imports {
				if strings.Contains(imp.Path.Value, "github.com/go-git/") && !(p.ImportPath == module+"/gitsync" && f == "git.go") {
					t.Errorf("%s/%s imports %s: go-git stays in gitsync/git.go", p.ImportPath, f, imp.Path.Value)
				}
			}
		}
	}
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment", p.ImportPath)
		}
	}
}
