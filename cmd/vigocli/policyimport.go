package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/atomicfile"
)

func newPolicyImportCmd(g *globals, ev *evalFlags) *cobra.Command {
	var dir, approvedFile string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "import SERVER.YAML [--approved FILE] [--dir DIR]",
		Short: "Convert the original product's server.yaml (bootstrap: section) into policy files",
		Long: `Import reads the enrollment settings of the original product's server.yaml, which now live
in the policy repository, and writes them as policy files into --dir (default .):

  bootstrap.trusted_enrollment  ->  trusted.cue   (each entry: pattern or patterns, cidrs, name)
  bootstrap.approved, --approved FILE  ->  approved.cue
  bootstrap.cert_validity       ->  settings.cue  (a number of days such as "90d" becomes "2160h")

--approved FILE adds approved patterns kept elsewhere (the original stored them in its
database): one pattern a line, blank lines and lines starting with # ignored. Every file
says where it comes from in a comment. The files are checked as "vigocli policy vet"
checks them (with the .cue files already in --dir) before anything is written; an
existing file is never overwritten. The server refuses these settings in server.yaml:
remove them there once the files are committed.

Exit status: 0 written, 1 refused (nothing written), 2 usage or I/O error.`,
		Example: `  vigocli policy import /etc/vigo/server.yaml --dir policy
  vigocli policy import server.yaml --approved approved.txt --dir policy --dry-run`,
		Args: exactArgs(1, "the server.yaml to import"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return &codeError{code: 2, err: err}
			}
			l, err := parseLegacy(filepath.Base(args[0]), data)
			if err != nil {
				return &codeError{code: 1, err: err}
			}
			if approvedFile != "" {
				pats, err := readPatterns(approvedFile)
				if err != nil {
					return &codeError{code: 2, err: err}
				}
				if len(pats) > 0 {
					l.Approved = append(l.Approved, pats...)
					l.ApprovedSource = filepath.Base(approvedFile)
					if len(l.Approved) > len(pats) {
						l.ApprovedSource = l.Source + " (bootstrap.approved) and " + l.ApprovedSource
					}
				}
			}
			files, err := policy.ImportLegacy(l)
			if err != nil {
				return &codeError{code: 1, err: fmt.Errorf("%w\nnothing was written", err)}
			}
			var tree gitsync.Tree
			if _, err := os.Stat(dir); err == nil {
				if tree, err = readTree(dir); err != nil {
					return err
				}
			}
			for _, f := range files {
				if _, err := os.Lstat(filepath.Join(dir, f.Name)); !errors.Is(err, fs.ErrNotExist) {
					return &codeError{code: 1, err: fmt.Errorf("%s exists already: import writes new files only (use an empty folder, or move it away); nothing was written", fileIn(dir, f.Name))}
				}
				tree.Files = append(tree.Files, gitsync.File{Name: f.Name, Data: f.Data})
			}
			p, errs, err := ev.vetTree(cmd.Context(), tree, "")
			if err != nil {
				return err
			}
			if len(errs) > 0 {
				fmt.Fprintln(g.stderr, prefixErrors(errs, dir))
				return &codeError{code: 1, err: fmt.Errorf("refused: the imported policy would not pass vet (%d %s); nothing was written",
					len(errs), plural(len(errs), "problem", "problems"))}
			}
			if dryRun {
				for _, f := range files {
					fmt.Fprintf(g.stdout, "-- %s --\n%s", fileIn(dir, f.Name), f.Data)
				}
				fmt.Fprintln(g.stdout, "dry run: the imported policy passes vet; nothing was written")
				return nil
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return &codeError{code: 2, err: fmt.Errorf("create %s: %w", dir, err)}
			}
			var names []string
			for _, f := range files {
				if err := atomicfile.Write(filepath.Join(dir, f.Name), f.Data, 0o644); err != nil {
					return &codeError{code: 2, err: err}
				}
				names = append(names, fileIn(dir, f.Name))
			}
			c := p.Counts()
			fmt.Fprintf(g.stdout, "imported %d trusted_enrollment %s, %d approved %s and cert_validity %s from %s into %s\n",
				c.Trusted, plural(c.Trusted, "entry", "entries"), c.Approved, plural(c.Approved, "pattern", "patterns"),
				policy.FormatDuration(p.CertValidity()), args[0], strings.Join(names, ", "))
			fmt.Fprintf(g.stdout, "The files pass vet. Next: add tests: cases (examples/policy/tests.cue shows how), commit the files,\n"+
				"and remove bootstrap.trusted_enrollment, bootstrap.approved and bootstrap.cert_validity from %s: the server refuses them.\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "policy folder to write the files into")
	cmd.Flags().StringVar(&approvedFile, "approved", "", "file of approved patterns, one a line")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the files and check them, but write nothing")
	return cmd
}

// parseLegacy reads the enrollment settings of an original server.yaml.
// Keys of the bootstrap: section that are not enrollment settings (they are
// server settings) are left alone; an unknown key inside an entry of
// trusted_enrollment is an error, so that nothing is silently dropped.
func parseLegacy(source string, data []byte) (policy.Legacy, error) {
	l := policy.Legacy{Source: source}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return l, fmt.Errorf("%s: parse YAML: %w", source, err)
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return l, fmt.Errorf("%s: not a YAML mapping", source)
	}
	bootstrap := mapValue(root.Content[0], "bootstrap")
	if bootstrap == nil {
		return l, fmt.Errorf("%s: no bootstrap: section, so nothing to import", source)
	}
	if bootstrap.Kind != yaml.MappingNode {
		return l, fmt.Errorf("%s:%d: bootstrap is not a mapping", source, bootstrap.Line)
	}
	var errs []error
	bad := func(n *yaml.Node, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", source, n.Line, fmt.Sprintf(format, args...)))
	}
	if n := mapValue(bootstrap, "cert_validity"); n != nil {
		if n.Kind != yaml.ScalarNode {
			bad(n, "bootstrap.cert_validity is not a duration")
		}
		l.CertValidity = n.Value
	}
	if n := mapValue(bootstrap, "approved"); n != nil {
		pats, err := scalars(n)
		if err != nil {
			bad(n, "bootstrap.approved: %v", err)
		}
		l.Approved = pats
	}
	if n := mapValue(bootstrap, "trusted_enrollment"); n != nil {
		if n.Kind != yaml.SequenceNode {
			bad(n, "bootstrap.trusted_enrollment is not a list")
		} else {
			for i, e := range n.Content {
				path := fmt.Sprintf("bootstrap.trusted_enrollment[%d]", i)
				if e.Kind != yaml.MappingNode {
					bad(e, "%s is not a mapping with pattern and cidrs", path)
					continue
				}
				t := policy.LegacyTrusted{Line: e.Line}
				for j := 0; j+1 < len(e.Content); j += 2 {
					k, v := e.Content[j], e.Content[j+1]
					var err error
					switch k.Value {
					case "name":
						t.Name = v.Value
					case "pattern", "patterns", "hostname", "hostnames":
						var ps []string
						ps, err = scalars(v)
						t.Patterns = append(t.Patterns, ps...)
					case "cidr", "cidrs", "networks", "source_cidrs":
						var cs []string
						cs, err = scalars(v)
						t.CIDRs = append(t.CIDRs, cs...)
					default:
						bad(k, "%s.%s: unknown key (known: name, pattern, patterns, cidr, cidrs)", path, k.Value)
					}
					if err != nil {
						bad(v, "%s.%s: %v", path, k.Value, err)
					}
				}
				l.Trusted = append(l.Trusted, t)
			}
		}
	}
	return l, errors.Join(errs...)
}

// mapValue returns the value of key in a mapping node, or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// scalars returns a scalar, or the scalars of a list.
func scalars(n *yaml.Node) ([]string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		return []string{n.Value}, nil
	case yaml.SequenceNode:
		var out []string
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return nil, errors.New("expected a list of strings")
			}
			out = append(out, c.Value)
		}
		return out, nil
	}
	return nil, errors.New("expected a string or a list of strings")
}

// readPatterns reads one pattern a line; blank lines and # comments are
// skipped.
func readPatterns(file string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read approved patterns: %w", err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read approved patterns %s: %w", file, err)
	}
	return out, nil
}
