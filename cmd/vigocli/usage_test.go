package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// anyArgs lists the commands that take any number of arguments.
var anyArgs = map[string]bool{
	"vigocli approved add":          true, // PATTERN...
	"vigocli approved remove":       true, // PATTERN...
	"vigocli help":                  true, // help [command]...
	"vigocli completion bash":       true, // cobra's, ignored
	"vigocli completion fish":       true,
	"vigocli completion zsh":        true,
	"vigocli completion powershell": true,
}

// TestUsageErrors walks the whole command tree: for every command, an
// unknown flag, a bad number of arguments, a bad -o value and -o where it
// does not apply are usage errors (exit 2, the message on stderr, nothing
// on stdout), and --help prints on stdout with exit 0.
func TestUsageErrors(t *testing.T) {
	t.Setenv("VIGO_CONFIG", t.TempDir()+"/none.yaml")
	var cmds []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		cmds = append(cmds, c)
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd(&globals{}))
	if len(cmds) < 30 {
		t.Fatalf("walked %d commands: the tree is not what this test expects", len(cmds))
	}
	type tc struct {
		name     string
		args     []string
		code     int
		stdout   bool   // stdout must be non-empty (else empty)
		inStderr string // stderr contains this (else is empty)
	}
	var cases []tc
	for _, c := range cmds {
		path := strings.Fields(c.CommandPath())[1:]
		with := func(extra ...string) []string { return append(append([]string{}, path...), extra...) }
		// valid are arguments that the command accepts, so that -o is
		// what is refused.
		var valid []string
		for c.Args != nil && c.Args(c, valid) != nil && len(valid) < 3 {
			valid = append(valid, "x")
		}
		name := c.CommandPath()
		cases = append(cases,
			tc{name: name + " --help", args: with("--help"), code: 0, stdout: true},
			tc{name: name + " --no-such-flag", args: with("--no-such-flag"), code: 2, inStderr: "unknown flag: --no-such-flag"},
			tc{name: name + " -o bogus", args: with(append(valid, "-o", "bogus")...), code: 2, inStderr: "-o bogus: must be one of table, wide, json, yaml"},
		)
		junk := []string{"x1", "x2", "x3", "x4", "x5"}
		switch {
		case anyArgs[name]:
		case c.Args == nil && !c.HasSubCommands():
			t.Errorf("%s accepts any arguments: give it Args (or list it in anyArgs)", name)
		case c.Name() == "help":
		default:
			if c.Args(c, junk) == nil {
				t.Errorf("%s accepts five arguments: list it in anyArgs", name)
				continue
			}
			cases = append(cases, tc{name: name + " with five arguments", args: with(junk...), code: 2, inStderr: "vigocli: "})
		}
		if c.Flags().Lookup("format") != nil {
			cases = append(cases, tc{name: name + " -o yaml", args: with(append(valid, "-o", "yaml")...), code: 2, inStderr: "-o yaml does not apply to " + name})
			cases = append(cases, tc{name: name + " -o json --format text", args: with(append(valid, "-o", "json", "--format", "text")...), code: 2, inStderr: "-o json and --format text disagree"})
		} else if c.Annotations[annotationOutput] == "" && c.Name() != "help" {
			cases = append(cases, tc{name: name + " -o json", args: with(append(valid, "-o", "json")...), code: 2, inStderr: "-o does not apply to " + name})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(&globals{stdout: &out, stderr: &errb}, tc.args)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if got := out.Len() > 0; got != tc.stdout {
				t.Errorf("stdout non-empty: %v, want %v:\n%s", got, tc.stdout, out.String())
			}
			switch {
			case tc.inStderr == "" && errb.Len() > 0:
				t.Errorf("stderr not empty: %s", errb.String())
			case !strings.Contains(errb.String(), tc.inStderr):
				t.Errorf("stderr lacks %q: %s", tc.inStderr, errb.String())
			}
		})
	}
}
