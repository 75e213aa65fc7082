package policy

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/txtar"
	"github.com/vigo-enroll/vigo/schemas"
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
			var files []File
			wantIdx := -1
			for i, f := range ar.Files {
				if f.Name == "want" {
					wantIdx = i
					continue
				}
				files = append(files, File{Name: f.Name, Data: f.Data})
			}
			got := vetOutput(files)
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

// vetOutput loads files and runs their tests, returning what vet would report.
func vetOutput(files []File) string {
	p, err := Load(files, "rev")
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
	files := []File{{Name: "a.cue", Data: []byte(`package policy
approved: ["Web1.Example.com."]
revocations: [{hostname: "DB1.example.com.", reason: "gone"}, {uuid: "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", reason: "lost"}]
`)}}
	p, err := Load(files, "abc123")
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

func TestLoadErrorsAs(t *testing.T) {
	t.Parallel()
	_, err := Load([]File{{Name: "a.cue", Data: []byte("package policy\napproved: [1]\n")}}, "")
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 {
		t.Fatalf("Load() = %v, want one Errors item", err)
	}
	want := &Error{File: "a.cue", Line: 2, Col: 12, Path: "approved[0]", Msg: es[0].Msg}
	if diff := cmp.Diff(want, es[0]); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestSchemaWords checks that every constraint reworded by the loader is
// still written in the schema: a change of the schema must change the words.
func TestSchemaWords(t *testing.T) {
	t.Parallel()
	for _, w := range schemaWords {
		if !strings.Contains(string(schemas.PolicyCUE), w.constraint) {
			t.Errorf("schemas/policy.cue has no constraint %s", w.constraint)
		}
	}
}

// TestSchemaDefaults checks that the defaults are the schema's: a policy
// without cert_validity gets the schema's default, and the Go constant used
// when there is no policy at all is the same.
func TestSchemaDefaults(t *testing.T) {
	t.Parallel()
	s, err := Evaluate([]File{{Name: "a.cue", Data: []byte("package policy\n")}}, EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := cuecontext.New()
	def := ctx.CompileBytes(schemas.PolicyCUE).LookupPath(cue.ParsePath("#Policy.cert_validity"))
	d, ok := def.Default()
	want, err := d.String()
	if !ok || err != nil {
		t.Fatalf("the schema has no default cert_validity: %v", err)
	}
	if s.CertValidity.Value != want {
		t.Errorf("cert_validity = %q, want the schema's default %q", s.CertValidity.Value, want)
	}
	if dur, _ := time.ParseDuration(want); dur != DefaultCertValidity {
		t.Errorf("DefaultCertValidity = %v, the schema says %s", DefaultCertValidity, want)
	}
}
