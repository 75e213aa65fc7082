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
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
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
		},
	})
}
