package gitsync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
)

// treeMap describes a tree for comparisons: each policy file by name with
// its content, and each problem as "!path" with its message.
func treeMap(t Tree) map[string]string {
	m := map[string]string{}
	for _, f := range t.Files {
		m[f.Name] = string(f.Data)
	}
	for _, p := range t.Problems {
		m["!"+p.Path] = p.Msg
	}
	return m
}

// treeCase is a policy folder: files (content), symbolic links (target)
// and what the tree rules make of it.
type treeCase struct {
	name     string
	files    map[string]string
	symlinks map[string]string
	want     map[string]string // treeMap of the result
}

func treeCases() []treeCase {
	const pol = "package policy\n"
	many := map[string]string{"a.cue": pol}
	for i := range 1000 {
		many[fmt.Sprintf("runbooks/page%04d.md", i)] = "a runbook"
	}
	tooMany := map[string]string{}
	for i := range MaxFiles + 1 {
		tooMany[fmt.Sprintf("f%04d.cue", i)] = pol
	}
	return []treeCase{
		{
			name:  "policy files at the top",
			files: map[string]string{"a.cue": pol, "b.cue": pol + "// b\n"},
			want:  map[string]string{"a.cue": pol, "b.cue": pol + "// b\n"},
		},
		{
			name: "README, docs, CI files and cue.mod are ignored",
			files: map[string]string{
				"a.cue": pol, "README.md": "# policy", "LICENSE": "x", "docs/INDEX.md": "x",
				".github/workflows/ci.yml": "on: push", ".github/x.cue": "not policy",
				"cue.mod/module.cue": "module: \"x\"", ".approved.cue.swp": "swap", "a.cue~": "backup",
			},
			want: map[string]string{"a.cue": pol},
		},
		{
			name:     "a docs symlink is ignored",
			files:    map[string]string{"a.cue": pol, "README.md": "# policy"},
			symlinks: map[string]string{"docs/INDEX.md": "../README.md", "docs/up": ".."},
			want:     map[string]string{"a.cue": pol},
		},
		{
			name:  "a large binary is ignored",
			files: map[string]string{"a.cue": pol, "blob.bin": strings.Repeat("\x00\x01", MaxTotalSize)},
			want:  map[string]string{"a.cue": pol},
		},
		{
			name:  "1,000 non-CUE files are ignored",
			files: many,
			want:  map[string]string{"a.cue": pol},
		},
		{
			name:     "a symlinked policy file refuses the revision",
			files:    map[string]string{"a.cue": pol},
			symlinks: map[string]string{"link.cue": "a.cue"},
			want: map[string]string{"a.cue": pol,
				"!link.cue": "a policy file may not be a symbolic link: replace the link by the file, or rename it if it is not policy"},
		},
		{
			name:  "a .cue file in a nested folder refuses the revision",
			files: map[string]string{"a.cue": pol, "teams/web.cue": pol},
			want: map[string]string{"a.cue": pol,
				"!teams/web.cue": "a .cue file in a subfolder is not part of the policy: move it to the top of the policy folder, or rename it if it is not policy"},
		},
		{
			name:  "a .cue file CUE would leave out refuses the revision",
			files: map[string]string{"a.cue": pol, "_draft.cue": pol},
			want:  map[string]string{"a.cue": pol, "!_draft.cue": `CUE leaves out files whose name starts with "_": rename it`},
		},
		{
			name:  "policy files over the size cap refuse the revision",
			files: map[string]string{"a.cue": pol, "b.cue": pol + "// " + strings.Repeat("x", MaxTotalSize)},
			want:  map[string]string{"a.cue": pol, "!b.cue": "policy too large: the .cue files may hold at most 8388608 bytes in all"},
		},
		{
			name:  "more policy files than the cap refuse the revision",
			files: tooMany,
			want: func() map[string]string {
				m := map[string]string{}
				for i := range MaxFiles {
					m[fmt.Sprintf("f%04d.cue", i)] = pol
				}
				m["!f1000.cue"] = "too many .cue files: a policy may have at most 1000"
				return m
			}(),
		},
	}
}

// TestTreeRules checks the tree rules on each case, read from a folder as
// vigocli and the folder source read it, and from a commit of a real Git
// repository as the Git source reads it: both must give the same tree.
func TestTreeRules(t *testing.T) {
	t.Parallel()
	for _, tc := range treeCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for name, content := range tc.files {
				writeFile(t, filepath.Join(dir, name), content)
			}
			for name, target := range tc.symlinks {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			fromDir, err := ReadDir(dir)
			if err != nil {
				t.Fatalf("ReadDir: %v", err)
			}
			if diff := cmp.Diff(tc.want, treeMap(fromDir)); diff != "" {
				t.Errorf("ReadDir (-want +got):\n%s", diff)
			}

			d, err := NewDir(DirConfig{Path: dir})
			if err != nil {
				t.Fatal(err)
			}
			rev, _, err := d.Fetch(context.Background())
			if err != nil {
				t.Fatalf("Dir.Fetch: %v", err)
			}
			if diff := cmp.Diff(tc.want, treeMap(rev.Tree)); diff != "" {
				t.Errorf("Dir source (-want +got):\n%s", diff)
			}

			repo := gitsynctest.NewRepo(t)
			files := map[string]string{}
			for name, content := range tc.files {
				files["policy/"+name] = content
			}
			repo.WriteFiles(files)
			for name, target := range tc.symlinks {
				repo.Symlink("policy/"+name, target)
			}
			repo.Commit(nil, "commit")
			repo.Push()
			g, err := NewGit(GitConfig{URL: repo.URL(), Path: "policy"})
			if err != nil {
				t.Fatal(err)
			}
			rev, _, err = g.Fetch(context.Background())
			if err != nil {
				t.Fatalf("Git.Fetch: %v", err)
			}
			if diff := cmp.Diff(tc.want, treeMap(rev.Tree)); diff != "" {
				t.Errorf("Git source (-want +got):\n%s", diff)
			}
		})
	}
}
