package main

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/vigo-enroll/vigo/policy/sandbox"
)

// TestMain lets testscript run vigocli in-process as the "vigocli" command.
func TestMain(m *testing.M) {
	sandbox.RunIfChild() // vigocli evaluates policy in a child: this binary
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files in testdata")
	}
	testscript.Main(m, map[string]func(){
		"vigocli": func() { os.Exit(Main()) },
	})
}

// TestPolicyScripts runs testdata/policy/*.txtar: policy vet and explain on
// policy folders, with their output compared to golden text. Refresh the
// golden sections with go test ./cmd/vigocli -run TestPolicyScripts -update.
func TestPolicyScripts(t *testing.T) {
	examples, err := filepath.Abs("../../examples/policy")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:           "testdata/policy",
		UpdateScripts: flag.Lookup("update").Value.String() == "true",
		Setup: func(env *testscript.Env) error {
			env.Setenv("EXAMPLES", examples)
			return nil
		},
		Cmds: scriptCmds(),
	})
}

// TestEditScripts runs testdata/edit/*.txtar: the commands that edit a
// policy checkout (approved, trusted, policy revoke/unrevoke/set), on
// copies of examples/policy, with git for --commit.
func TestEditScripts(t *testing.T) {
	examples, err := filepath.Abs("../../examples/policy")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:           "testdata/edit",
		UpdateScripts: flag.Lookup("update").Value.String() == "true",
		Setup: func(env *testscript.Env) error {
			env.Setenv("EXAMPLES", examples)
			gitEnv(env)
			return nil
		},
		Cmds: scriptCmds(),
	})
}

// TestImportScripts runs testdata/import/*.txtar: vigocli policy import
// of the original product's server.yaml.
func TestImportScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:           "testdata/import",
		UpdateScripts: flag.Lookup("update").Value.String() == "true",
		Cmds:          scriptCmds(),
	})
}

// gitEnv lets scripts run git: an identity, no user or system
// configuration.
func gitEnv(env *testscript.Env) {
	env.Setenv("HOME", env.WorkDir)
	env.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	env.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	for _, k := range []string{"GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"} {
		env.Setenv(k, "Pat Operator")
	}
	for _, k := range []string{"GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"} {
		env.Setenv(k, "pat@example.com")
	}
}

// scriptCmds are the commands scripts have beside testscript's own.
func scriptCmds() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		// exitcode N CMD ARGS... runs CMD and checks its exit status.
		"exitcode": func(ts *testscript.TestScript, neg bool, args []string) {
			if neg || len(args) < 2 {
				ts.Fatalf("usage: exitcode N command [args...]")
			}
			want, err := strconv.Atoi(args[0])
			if err != nil {
				ts.Fatalf("exitcode: %v", err)
			}
			got := 0
			if err := ts.Exec(args[1], args[2:]...); err != nil {
				var ee *exec.ExitError
				if !errors.As(err, &ee) {
					ts.Fatalf("exitcode: %v", err)
				}
				got = ee.ExitCode()
			}
			if got != want {
				ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
			}
		},
	}
}
