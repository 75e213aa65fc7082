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

// These tests write down the layout rules of the project's conventions (the
// dependency direction cmd -> server|agent -> gitsync|policy -> schemas) so
// that they hold without anyone remembering them. They live in schemas, the bottom of
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

// rule is one dependency rule: packages matching who may not import (or,
// with deps, depend on through any path) a package for which forbid is true.
type rule struct {
	who    func(pkg) bool
	forbid func(imp string) bool
	deps   bool // all dependencies, not only direct imports
	why    string
}

func prefix(ps ...string) func(string) bool {
	return func(s string) bool {
		for _, p := range ps {
			if s == p || strings.HasPrefix(s, p+"/") || strings.HasSuffix(p, "/") && strings.HasPrefix(s, p) {
				return true
			}
		}
		return false
	}
}

func in(dir string) func(pkg) bool { return func(p pkg) bool { return under(p.ImportPath, dir) } }

// rules are the dependency rules of the module (CONVENTIONS.md, "Dependency
// direction"), in one table. A rule per binary keeps each one's dependencies
// what it should be, like tailscale's depaware.
var rules = []rule{
	{who: func(p pkg) bool { return p.ImportPath == module+"/policy" },
		forbid: func(imp string) bool {
			// The policy package is pure: the standard library without
			// network, database, files, logging or processes; CUE; schemas.
			bad := prefix("net/http", "net/rpc", "database", "log", "os", "cuelang.org/go/cue/load", "cuelang.org/go/mod")
			first, _, _ := strings.Cut(imp, "/")
			return bad(imp) || strings.Contains(first, ".") && !prefix("cuelang.org/go/cue", module+"/schemas")(imp)
		},
		why: "policy is pure: files in, a policy or errors out (standard library, CUE and schemas only)"},
	{who: in("policy"), forbid: func(imp string) bool { return prefix(module)(imp) && !prefix(module+"/schemas", module+"/policy")(imp) },
		why: "policy may import only schemas of this module"},
	{who: in("gitsync"), forbid: prefix("cuelang.org", module+"/policy", module+"/server"),
		why: "gitsync knows nothing of CUE, policy or the server"},
	{who: func(p pkg) bool {
		return strings.HasPrefix(p.ImportPath, module+"/server/") && !strings.HasSuffix(p.ImportPath, "test")
	},
		forbid: func(imp string) bool { return imp == module+"/server" }, why: "no package under server/ imports the server root"},
	{who: func(p pkg) bool { return !under(p.ImportPath, "cmd") }, forbid: prefix("github.com/spf13/cobra"),
		why: "cobra appears only under cmd/"},
	{who: in("schemas"), forbid: func(imp string) bool { return prefix(module)(imp) && !prefix(module+"/schemas")(imp) },
		why: "schemas is the bottom layer"},
	// Per binary, through every path.
	{who: func(p pkg) bool { return under(p.ImportPath, "agent") || p.ImportPath == module+"/cmd/vigo" }, deps: true,
		forbid: prefix(module+"/server", module+"/policy", module+"/gitsync", "cuelang.org", "modernc.org/sqlite",
			"github.com/go-git", "github.com/jackc/pgx", "github.com/prometheus", "github.com/fsnotify"),
		why: "the agent must stay small and free of server code"},
	{who: func(p pkg) bool { return p.ImportPath == module+"/cmd/vigosrv" }, deps: true,
		forbid: prefix(module + "/agent"),
		why:    "the server links no agent code (the fleet simulator is cmd/vigoload)"},
	{who: func(p pkg) bool { return p.ImportPath == module+"/cmd/vigocli" }, deps: true,
		forbid: func(d string) bool {
			return prefix(module+"/agent", "modernc.org/sqlite", "github.com/jackc/pgx", "google.golang.org/grpc")(d) ||
				prefix(module+"/server")(d) && d != module+"/server/agentdist" // offline signing of agent builds
		},
		why: "vigocli talks to the server over HTTPS: no store, no gRPC, no agent"},
}

// TestDependencyRules checks every package against the rules table.
func TestDependencyRules(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, r := range rules {
			if !r.who(p) {
				continue
			}
			list := p.Imports
			if r.deps {
				list = p.Deps
			}
			for _, imp := range list {
				if r.forbid(imp) {
					t.Errorf("%s depends on %s: %s", p.ImportPath, imp, r.why)
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
