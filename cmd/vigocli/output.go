package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// The output convention, one for every command that prints data:
//
//	-o table  (default) aligned columns for people; times as relative ages ("3m ago")
//	-o wide   the table with more columns (where a command has more to show)
//	-o json   the server's wire form, indented; times in RFC 3339 with their zone
//	-o yaml   the same document as YAML
//
// A command that prints data says so with printsData; a command with its
// own --format (policy vet, policy diff) takes -o json and -o table as
// --format json and text; -o given to any other command is a usage error
// (exit 2), never silently ignored. Errors
// go to stderr; the exit status is 2 for a usage error (unknown command or
// flag, wrong number of arguments, bad flag value), 1 for a failed check
// and 0 otherwise.

// outputFormats are the values of -o.
var outputFormats = []string{"table", "wide", "json", "yaml"}

// annotationOutput marks a command that honours -o; its value, when not
// "all", is the --format flag that replaces -o there.
const annotationOutput = "vigocli/output"

// printsData marks cmd as honouring -o table|wide|json|yaml.
func printsData(cmd *cobra.Command) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[annotationOutput] = "all"
	return cmd
}

// checkOutput validates -o for the command about to run.
func (g *globals) checkOutput(cmd *cobra.Command) error {
	valid := false
	for _, f := range outputFormats {
		valid = valid || g.output == f
	}
	if !valid {
		return &codeError{code: 2, err: fmt.Errorf("-o %s: must be one of %s (see '%s --help')", g.output, strings.Join(outputFormats, ", "), cmd.CommandPath())}
	}
	f := cmd.Flags().Lookup("output")
	if f == nil || !f.Changed || cmd.Annotations[annotationOutput] == "all" {
		return nil
	}
	if ff := cmd.Flags().Lookup("format"); ff != nil {
		// A command with its own --format (policy vet, policy diff): -o
		// json and -o table are its --format json and text.
		want, ok := map[string]string{"json": "json", "table": "text"}[g.output]
		switch {
		case !ok:
			return &codeError{code: 2, err: fmt.Errorf("-o %s does not apply to %s: it prints with --format (see '%s --help')", g.output, cmd.CommandPath(), cmd.CommandPath())}
		case ff.Changed && ff.Value.String() != want:
			return &codeError{code: 2, err: fmt.Errorf("-o %s and --format %s disagree: give one of them", g.output, ff.Value.String())}
		}
		return ff.Value.Set(want)
	}
	return &codeError{code: 2, err: fmt.Errorf("-o does not apply to %s: it prints no data", cmd.CommandPath())}
}

// structured reports whether -o asks for a document (json or yaml) rather
// than a table.
func (g *globals) structured() bool { return g.output == "json" || g.output == "yaml" }

// wide reports whether -o wide asks for the extra columns.
func (g *globals) wide() bool { return g.output == "wide" }

// printData prints v as -o json or -o yaml asks. YAML is made from the
// JSON form, so that both carry the same field names (the wire types'
// json tags), in the same order.
func (g *globals) printData(v any) error {
	if g.output != "yaml" {
		return g.printJSON(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("convert to yaml: %w", err)
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("encode yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err = g.stdout.Write(buf.Bytes())
	return err
}

// blockStyle turns JSON's flow style into YAML's block style, keeping the
// quotes JSON put around strings only where YAML needs them.
func blockStyle(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		n.Style &^= yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// stdinTerminal reports whether stdin is a terminal (someone can answer).
func (g *globals) stdinTerminal() bool {
	if g.terminal != nil {
		return g.terminal()
	}
	f, ok := g.stdin.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// now is the time ages are counted from.
func (g *globals) now() time.Time {
	if g.clock != nil {
		return g.clock()
	}
	return time.Now()
}

// age formats t for a table: relative to now ("3m ago", "in 2h"), "-"
// when unset.
func (g *globals) age(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	d := g.now().Sub(*t)
	if d < 0 {
		return "in " + shortDuration(-d)
	}
	if d < time.Second {
		return "just now"
	}
	return shortDuration(d) + " ago"
}

// shortDuration rounds d to its largest unit, as kubectl's AGE does: 45s,
// 3m, 5h, 12d, 2y.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d < 2*365*24*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	default:
		return fmt.Sprintf("%dy", int(d/(365*24*time.Hour)))
	}
}

// fmtTime formats t for a detailed view: local time with its zone.
func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05 MST")
}

// newHelpCmd is cobra's help command, except that an unknown topic is a
// usage error (cobra's prints the usage and exits 0).
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if cmd == nil || err != nil || len(rest) > 0 {
				return &codeError{code: 2, err: fmt.Errorf("unknown help topic %q (see 'vigocli --help')", strings.Join(args, " "))}
			}
			cmd.InitDefaultHelpFlag()
			return cmd.Help()
		},
	}
}

// enforceUsage makes every usage error of the command tree under root a
// codeError with exit status 2: wrong arguments (cobra's validators
// included) and unknown subcommands. A command group run without a
// subcommand prints its help on stdout and exits 0.
func enforceUsage(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch {
		case c.HasSubCommands() && c.Run == nil && c.RunE == nil:
			c.Args = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return nil
				}
				msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
				if cmd.SuggestionsMinimumDistance <= 0 {
					cmd.SuggestionsMinimumDistance = 2
				}
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					msg += "; did you mean " + strings.Join(s, " or ") + "?"
				}
				return &codeError{code: 2, err: fmt.Errorf("%s (see '%s --help')", msg, cmd.CommandPath())}
			}
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		case c.Args != nil:
			inner := c.Args
			c.Args = func(cmd *cobra.Command, args []string) error {
				err := inner(cmd, args)
				var ec exitCoder
				if err == nil || errors.As(err, &ec) {
					return err
				}
				return &codeError{code: 2, err: fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())}
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}
