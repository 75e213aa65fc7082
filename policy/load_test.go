package policy

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/txtar"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// TestLoadGolden loads each testdata/load/*.txtar archive as a policy folder
// and compares the errors (and failing tests) with its "want" section.
func TestLoadGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/load/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			t.Parallel()
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			fsys := fstest.MapFS{}
			wantIdx := -1
			for i, f := range ar.Files {
				if f.Name == "want" {
					wantIdx = i
					continue
				}
				fsys[f.Name] = &fstest.MapFile{Data: f.Data}
			}
			got := vetOutput(fsys)
			if *update {
				if wantIdx < 0 {
					ar.Files = append(ar.Files, txtar.File{Name: "want"})
					wantIdx = len(ar.Files) - 1
				}
				ar.Files[wantIdx].Data = []byte(got)
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if wantIdx < 0 {
				t.Fatalf("%s has no want section; run with -update", file)
			}
			if diff := cmp.Diff(string(ar.Files[wantIdx].Data), got); diff != "" {
				t.Errorf("output mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// vetOutput loads fsys and runs its tests, returning what vet would report.
func vetOutput(fsys fstest.MapFS) string {
	p, err := Load(fsys, "rev")
	if err != nil {
		var es Errors
		if !errors.As(err, &es) {
			return "I/O error: " + err.Error() + "\n"
		}
		return err.Error() + "\n"
	}
	var b strings.Builder
	for _, f := range p.RunTests() {
		b.WriteString(f.Err().Error() + "\n")
	}
	if b.Len() == 0 {
		return "ok\n"
	}
	return b.String()
}

func TestLoadValues(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"a.cue": {Data: []byte(`package policy
approved: ["Web1.Example.com."]
revocations: [{hostname: "DB1.example.com.", reason: "gone"}, {uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", reason: "lost"}]
`)},
		"cue.mod/module.cue": {Data: []byte(`module: "example.com/policy@v0"
language: version: "v0.12.0"
`)},
		"README.md": {Data: []byte("# policy\n")},
	}
	p, err := Load(fsys, "abc123")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Revision(); got != "abc123" {
		t.Errorf("Revision() = %q", got)
	}
	if got := p.CertValidity(); got != 8760*time.Hour {
		t.Errorf("CertValidity() = %v, want default 8760h", got)
	}
	if got := p.TokenMaxTTL(); got != 0 {
		t.Errorf("TokenMaxTTL() = %v, want 0", got)
	}
	want := []Revocation{
		{Hostname: "db1.example.com", Reason: "gone"},
		{UUID: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", Reason: "lost"},
	}
	if diff := cmp.Diff(want, p.Revocations()); diff != "" {
		t.Errorf("Revocations() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Counts{Approved: 1, Revocations: 2}, p.Counts()); diff != "" {
		t.Errorf("Counts() (-want +got):\n%s", diff)
	}
	if _, ok := p.RevokedHostname("db1.EXAMPLE.com"); !ok {
		t.Errorf("RevokedHostname(db1.EXAMPLE.com) = false")
	}
}

func TestLoadDirIOError(t *testing.T) {
	t.Parallel()
	_, err := LoadDir(filepath.Join(t.TempDir(), "missing"), "")
	var es Errors
	if err == nil || errors.As(err, &es) {
		t.Fatalf("LoadDir(missing) = %v, want an I/O error that is not Errors", err)
	}
}

func TestLoadErrorsAs(t *testing.T) {
	t.Parallel()
	_, err := Load(fstest.MapFS{"a.cue": {Data: []byte("package policy\napproved: [1]\n")}}, "")
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 {
		t.Fatalf("Load() = %v, want one Errors item", err)
	}
	want := &Error{File: "a.cue", Line: 2, Col: 12, Path: "approved[0]", Msg: es[0].Msg}
	if diff := cmp.Diff(want, es[0]); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLoadLimits(t *testing.T) {
	t.Parallel()
	many := fstest.MapFS{}
	for i := range MaxFiles + 1 {
		many[fmt.Sprintf("f%04d.cue", i)] = &fstest.MapFile{Data: []byte("package policy\n")}
	}
	big := fstest.MapFS{
		"a.cue": {Data: []byte("package policy\n")},
		"b.cue": {Data: append([]byte("package policy\n// "), bytes.Repeat([]byte("x"), MaxTotalSize)...)},
	}
	tests := []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{"too many files", many, "f1000.cue: too many .cue files: a policy folder may hold at most 1000"},
		{"too large", big, "b.cue: policy too large: the .cue files may hold at most 8388608 bytes in all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(tt.fsys, "")
			if err == nil || err.Error() != tt.want {
				t.Errorf("Load() = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestLoadDirSymlinkAndGit checks that LoadDir refuses symbolic links and
// skips .git folders.
func TestLoadDirSymlinkAndGit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	outside := t.TempDir()
	write := func(name, src string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "a.cue"), "package policy\napproved: [\"a.example.com\"]\n")
	write(filepath.Join(dir, ".git", "junk.cue"), "package other\n")
	if _, err := LoadDir(dir, "r"); err != nil {
		t.Fatalf("LoadDir with a .git folder: %v", err)
	}
	write(filepath.Join(outside, "secret.cue"), "package policy\n")
	if err := os.Symlink(filepath.Join(outside, "secret.cue"), filepath.Join(dir, "b.cue")); err != nil {
		t.Skipf("symlinks not supported: %v", err)
	}
	_, err := LoadDir(dir, "r")
	want := "b.cue: symbolic links are not allowed in a policy folder"
	if err == nil || err.Error() != want {
		t.Errorf("LoadDir with a symlink = %v, want %q", err, want)
	}
}
