package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/diff"
	"github.com/rogpeppe/go-internal/txtar"
)

// examplePolicy reads examples/policy.
func examplePolicy(t *testing.T) []File {
	t.Helper()
	names, err := filepath.Glob("../examples/policy/*.cue")
	if err != nil || len(names) == 0 {
		t.Fatalf("no example policy: %v", err)
	}
	var files []File
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Name: filepath.Base(n), Data: b})
	}
	return files
}

// editReport is what a golden section holds: where and what, then the
// unified diff of every file that changed (files that did not change
// must not appear: they are byte for byte the same).
func editReport(before []File, r *EditResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "where: %s\nsummary: %s\n", r.Where, r.Summary)
	for _, d := range r.Details {
		fmt.Fprintf(&b, "detail: %s\n", d)
	}
	fmt.Fprintf(&b, "changed: %s\n", strings.Join(r.Changed, " "))
	if len(r.Created) > 0 {
		fmt.Fprintf(&b, "created: %s\n", strings.Join(r.Created, " "))
	}
	old := map[string][]byte{}
	for _, f := range before {
		old[f.Name] = f.Data
	}
	for _, f := range r.Files {
		b.Write(diff.Diff("a/"+f.Name, old[f.Name], "b/"+f.Name, f.Data))
	}
	return b.String()
}

// TestEditGolden edits examples/policy with each editing operation and
// compares the diff with testdata/edit/golden.txtar (refresh with
// go test ./policy -run TestEditGolden -update). Comments and formatting
// outside the edited entry stay byte for byte: only the entry's lines
// appear in the diff. Each result is a valid policy whose tests pass.
func TestEditGolden(t *testing.T) {
	const golden = "testdata/edit/golden.txtar"
	cases := []struct {
		name string
		edit func([]File) (*EditResult, error)
		// failing is the number of the example's tests that the edit
		// makes fail (vigocli then refuses to write it).
		failing int
	}{
		{name: "approved_add", edit: func(f []File) (*EditResult, error) { return AddApproved(f, "", "*.stage.example.com") }},
		{name: "approved_add_two", edit: func(f []File) (*EditResult, error) {
			return AddApproved(f, "", "*.Stage.example.com.", "build?.example.com")
		}},
		{name: "approved_add_replace", edit: func(f []File) (*EditResult, error) { return AddApproved(f, "proof", "*.stage.example.com") }},
		{name: "approved_remove", edit: func(f []File) (*EditResult, error) { return RemoveApproved(f, "backup1.example.com") }},
		{name: "approved_remove_group", edit: func(f []File) (*EditResult, error) {
			// The comment above the two single hosts goes with the last of them.
			return RemoveApproved(f, "backup1.example.com", "MONITOR1.example.com")
		}, failing: 1},
		{name: "trusted_add", edit: func(f []File) (*EditResult, error) {
			return AddTrusted(f, TrustedEdit{Name: "lab", Pattern: "*.lab.example.com", CIDRs: []string{"10.30.0.0/16", "fd00:30::/48"}})
		}},
		{name: "trusted_add_replace", edit: func(f []File) (*EditResult, error) {
			return AddTrusted(f, TrustedEdit{Name: "lab", Pattern: "*.lab.example.com", CIDRs: []string{"10.30.0.0/16"}, Replace: "token"})
		}},
		{name: "trusted_remove", edit: func(f []File) (*EditResult, error) { return RemoveTrusted(f, "dc2-servers") }},
		{name: "revoke_hostname", edit: func(f []File) (*EditResult, error) {
			return AddRevocation(f, Revocation{Hostname: "Web9.web.example.com", Reason: "compromised (SEC-90)"})
		}},
		{name: "revoke_uuid", edit: func(f []File) (*EditResult, error) {
			return AddRevocation(f, Revocation{UUID: "5d3e1c2a-8f4b-4a6e-9c7d-2b1a0f9e8d7c", Reason: "stolen"})
		}},
		{name: "unrevoke_hostname", edit: func(f []File) (*EditResult, error) { return RemoveRevocation(f, "", "db1.dc1.example.com") }, failing: 2},
		{name: "unrevoke_uuid", edit: func(f []File) (*EditResult, error) {
			return RemoveRevocation(f, "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11", "")
		}},
		{name: "set_cert_validity", edit: func(f []File) (*EditResult, error) { return SetSetting(f, SettingCertValidity, "720h") }},
		{name: "set_token_max_ttl", edit: func(f []File) (*EditResult, error) { return SetSetting(f, SettingTokenMaxTTL, "24h") }},
	}
	ar, err := txtar.ParseFile(golden)
	if err != nil && !*update {
		t.Fatal(err)
	}
	if ar == nil {
		ar = &txtar.Archive{}
	}
	want := map[string]string{}
	for _, f := range ar.Files {
		want[f.Name] = string(f.Data)
	}
	out := &txtar.Archive{Comment: []byte("Diffs of the edits of examples/policy made by TestEditGolden (-update rewrites them).\n")}
	for _, c := range cases {
		files := examplePolicy(t)
		r, err := c.edit(files)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		got := editReport(files, r)
		out.Files = append(out.Files, txtar.File{Name: c.name, Data: []byte(got)})
		if !*update {
			if d := cmp.Diff(want[c.name], got); d != "" {
				t.Errorf("%s: mismatch (-want +got):\n%s", c.name, d)
			}
		}
		p, err := Load(r.Files, "edited")
		if err != nil {
			t.Errorf("%s: the edited policy does not load:\n%v", c.name, err)
			continue
		}
		if n := len(p.RunTests()); n != c.failing {
			t.Errorf("%s: %d of the example's tests fail after the edit, want %d", c.name, n, c.failing)
		}
	}
	if *update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, txtar.Format(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEditRefusals checks the edits that are refused, with a message that
// says what to do instead.
func TestEditRefusals(t *testing.T) {
	t.Parallel()
	pkg := "package policy\n\n"
	cases := []struct {
		name     string
		files    map[string]string
		edit     func([]File) (*EditResult, error)
		want     string // in the error
		noChange bool   // errors.Is ErrNoChange
	}{
		{
			name:     "already approved",
			files:    map[string]string{"a.cue": pkg + "approved: [\"*.web.example.com\"]\n"},
			edit:     func(f []File) (*EditResult, error) { return AddApproved(f, "", "*.WEB.example.com.") },
			want:     "pattern *.web.example.com is already approved at a.cue:3:12 (approved[0])",
			noChange: true,
		},
		{
			name:  "invalid pattern",
			files: map[string]string{"a.cue": pkg + "approved: []\n"},
			edit:  func(f []File) (*EditResult, error) { return AddApproved(f, "", "web[1].example.com") },
			want:  `only '*' and '?' are special`,
		},
		{
			name:     "remove what is not there",
			files:    map[string]string{"a.cue": pkg + "approved: [\"a.example.com\", _b]\n_b: \"b.example.com\"\n"},
			edit:     func(f []File) (*EditResult, error) { return RemoveApproved(f, "b.example.com") },
			want:     "pattern b.example.com is not in the list approved at a.cue:3:11 (1 of its entries are expressions that vigocli cannot read; edit those by hand)",
			noChange: true,
		},
		{
			name:  "built by a comprehension",
			files: map[string]string{"a.cue": pkg + "_teams: web: [\"a.example.com\"]\napproved: [for _, l in _teams for p in l {p}]\n"},
			edit:  func(f []File) (*EditResult, error) { return AddApproved(f, "", "b.example.com") },
			want:  "approved at a.cue:4:11 is built by a comprehension (for ... in ...): vigocli edits only a plain list; edit the values the comprehension reads by hand",
		},
		{
			name:  "built by a call",
			files: map[string]string{"a.cue": pkg + "import \"list\"\n\n_a: [\"a.example.com\"]\n_b: [\"b.example.com\"]\napproved: list.Concat([_a, _b])\n"},
			edit:  func(f []File) (*EditResult, error) { return AddApproved(f, "", "c.example.com") },
			want:  "approved at a.cue:7:11 is not a list written out as [...] but an expression that builds it",
		},
		{
			name: "declared in two files",
			files: map[string]string{
				"a.cue": pkg + "approved: [\"a.example.com\"]\n",
				"b.cue": pkg + "approved: [\"a.example.com\"]\n",
			},
			edit: func(f []File) (*EditResult, error) { return AddApproved(f, "", "c.example.com") },
			want: "approved is declared 2 times (a.cue:3:1, b.cue:3:1)",
		},
		{
			name:  "trusted name taken",
			files: map[string]string{"t.cue": pkg + "trusted_enrollment: [{name: \"lab\", pattern: \"*.lab\", cidrs: [\"10.0.0.0/8\"]}]\n"},
			edit: func(f []File) (*EditResult, error) {
				return AddTrusted(f, TrustedEdit{Name: "lab", Pattern: "x.example.com", CIDRs: []string{"10.1.0.0/16"}})
			},
			want:     `an entry named "lab" is already at t.cue:3:22 (trusted_enrollment[0])`,
			noChange: true,
		},
		{
			name:  "trusted host bits",
			files: map[string]string{"t.cue": pkg + "trusted_enrollment: []\n"},
			edit: func(f []File) (*EditResult, error) {
				return AddTrusted(f, TrustedEdit{Name: "lab", Pattern: "x.example.com", CIDRs: []string{"10.1.2.3/16"}})
			},
			want: "CIDR 10.1.2.3/16 has host bits set: write 10.1.0.0/16",
		},
		{
			name:     "trusted remove unknown",
			files:    map[string]string{"t.cue": pkg + "trusted_enrollment: [{name: \"lab\", pattern: \"*.lab\", cidrs: [\"10.0.0.0/8\"]}]\n"},
			edit:     func(f []File) (*EditResult, error) { return RemoveTrusted(f, "office") },
			want:     `no entry named "office" in the list trusted_enrollment at t.cue:3:21 (named entries: "lab")`,
			noChange: true,
		},
		{
			name:  "already revoked",
			files: map[string]string{"r.cue": pkg + "revocations: [{hostname: \"DB1.example.com\", reason: \"old\"}]\n"},
			edit: func(f []File) (*EditResult, error) {
				return AddRevocation(f, Revocation{Hostname: "db1.example.com", Reason: "x"})
			},
			want:     "hostname db1.example.com is already revoked at r.cue:3:15 (revocations[0])",
			noChange: true,
		},
		{
			name:  "revoke a pattern",
			files: map[string]string{"r.cue": pkg + "revocations: []\n"},
			edit: func(f []File) (*EditResult, error) {
				return AddRevocation(f, Revocation{Hostname: "*.example.com", Reason: "x"})
			},
			want: "is a pattern: a revocation names one exact hostname",
		},
		{
			name:  "revoke without reason",
			files: map[string]string{"r.cue": pkg + "revocations: []\n"},
			edit:  func(f []File) (*EditResult, error) { return AddRevocation(f, Revocation{Hostname: "a.example.com"}) },
			want:  "a reason is required",
		},
		{
			name:     "unrevoke what is not revoked",
			files:    map[string]string{"r.cue": pkg + "revocations: []\n"},
			edit:     func(f []File) (*EditResult, error) { return RemoveRevocation(f, "", "a.example.com") },
			want:     "hostname a.example.com is not revoked in the list revocations at r.cue:3:14",
			noChange: true,
		},
		{
			name:     "setting unchanged",
			files:    map[string]string{"s.cue": pkg + "cert_validity: \"720h\"\n"},
			edit:     func(f []File) (*EditResult, error) { return SetSetting(f, SettingCertValidity, "720h") },
			want:     "cert_validity is already 720h at s.cue:3:16",
			noChange: true,
		},
		{
			name:  "setting out of bounds",
			files: map[string]string{"s.cue": pkg},
			edit:  func(f []File) (*EditResult, error) { return SetSetting(f, SettingCertValidity, "30m") },
			want:  "30m is out of bounds: cert_validity must be between 1h and 87600h",
		},
		{
			name:  "setting by expression",
			files: map[string]string{"s.cue": pkg + "_v: \"720h\"\ncert_validity: _v\n"},
			edit:  func(f []File) (*EditResult, error) { return SetSetting(f, SettingCertValidity, "1h") },
			want:  "cert_validity at s.cue:4:16 is not a string written out",
		},
		{
			name:  "unknown setting",
			files: map[string]string{"s.cue": pkg},
			edit:  func(f []File) (*EditResult, error) { return SetSetting(f, "validity", "1h") },
			want:  `unknown setting "validity"`,
		},
		{
			name:  "a file that does not parse",
			files: map[string]string{"a.cue": pkg + "approved: [\n"},
			edit:  func(f []File) (*EditResult, error) { return AddApproved(f, "", "a.example.com") },
			want:  "a.cue does not parse, so it cannot be edited",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var files []File
			for n, d := range c.files {
				files = append(files, File{Name: n, Data: []byte(d)})
			}
			r, err := c.edit(files)
			if err == nil {
				t.Fatalf("edit succeeded: %+v", r)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error = %v\nwant it to contain %q", err, c.want)
			}
			if got := errors.Is(err, ErrNoChange); got != c.noChange {
				t.Errorf("errors.Is(err, ErrNoChange) = %v, want %v", got, c.noChange)
			}
		})
	}
}

// TestEditLayouts checks edits of lists written in other layouts than the
// example's, and of policies that lack the edited field.
func TestEditLayouts(t *testing.T) {
	t.Parallel()
	pkg := "package policy\n\n"
	cases := []struct {
		name  string
		files map[string]string
		edit  func([]File) (*EditResult, error)
		want  map[string]string // changed files
	}{
		{
			name:  "one-line list",
			files: map[string]string{"a.cue": pkg + "approved: [\"a.example.com\"] // short\n"},
			edit:  func(f []File) (*EditResult, error) { return AddApproved(f, "", "b.example.com") },
			want:  map[string]string{"a.cue": pkg + "approved: [\"a.example.com\", \"b.example.com\"] // short\n"},
		},
		{
			name:  "empty list",
			files: map[string]string{"a.cue": pkg + "approved: []\n"},
			edit:  func(f []File) (*EditResult, error) { return AddApproved(f, "", "b.example.com") },
			want:  map[string]string{"a.cue": pkg + "approved: [\"b.example.com\"]\n"},
		},
		{
			name:  "remove from a one-line list",
			files: map[string]string{"a.cue": pkg + "approved: [\"a.example.com\", \"b.example.com\", \"c.example.com\"]\n"},
			edit:  func(f []File) (*EditResult, error) { return RemoveApproved(f, "b.example.com", "c.example.com") },
			want:  map[string]string{"a.cue": pkg + "approved: [\"a.example.com\"]\n"},
		},
		{
			name:  "remove the only element",
			files: map[string]string{"a.cue": pkg + "approved: [\"a.example.com\"]\n"},
			edit:  func(f []File) (*EditResult, error) { return RemoveApproved(f, "a.example.com") },
			want:  map[string]string{"a.cue": pkg + "approved: []\n"},
		},
		{
			name:  "last element without a comma, bracket on its line",
			files: map[string]string{"a.cue": pkg + "approved: [\n\t\"a.example.com\"]\n"},
			edit:  func(f []File) (*EditResult, error) { return AddApproved(f, "", "b.example.com") },
			want:  map[string]string{"a.cue": pkg + "approved: [\n\t\"a.example.com\",\n\t\"b.example.com\",\n]\n"},
		},
		{
			name:  "one-line struct entries",
			files: map[string]string{"t.cue": pkg + "trusted_enrollment: [{name: \"a\", pattern: \"*.a\", cidrs: [\"10.0.0.0/8\"]}]\n"},
			edit: func(f []File) (*EditResult, error) {
				return AddTrusted(f, TrustedEdit{Name: "b", Pattern: "*.b", CIDRs: []string{"10.1.0.0/16"}})
			},
			want: map[string]string{"t.cue": pkg + "trusted_enrollment: [{name: \"a\", pattern: \"*.a\", cidrs: [\"10.0.0.0/8\"]}, {name: \"b\", pattern: \"*.b\", cidrs: [\"10.1.0.0/16\"]}]\n"},
		},
		{
			name:  "no approved yet: a new file",
			files: map[string]string{"t.cue": pkg + "trusted_enrollment: []\n"},
			edit:  func(f []File) (*EditResult, error) { return AddApproved(f, "", "a.example.com") },
			want:  map[string]string{"approved.cue": pkg + "approved: [\"a.example.com\"]\n"},
		},
		{
			name:  "no revocations yet: added to revocations.cue",
			files: map[string]string{"revocations.cue": pkg + "// Nothing yet.\n"},
			edit: func(f []File) (*EditResult, error) {
				return AddRevocation(f, Revocation{Hostname: "a.example.com", Reason: "gone"})
			},
			want: map[string]string{"revocations.cue": pkg + "// Nothing yet.\n\nrevocations: [{hostname: \"a.example.com\", reason: \"gone\"}]\n"},
		},
		{
			name:  "no tokens yet",
			files: map[string]string{"settings.cue": pkg + "cert_validity: \"720h\"\n"},
			edit:  func(f []File) (*EditResult, error) { return SetSetting(f, SettingTokenMaxTTL, "24h") },
			want:  map[string]string{"settings.cue": pkg + "cert_validity: \"720h\"\n\ntokens: {\n\tmax_ttl: \"24h\"\n}\n"},
		},
		{
			name:  "tokens without max_ttl",
			files: map[string]string{"settings.cue": pkg + "tokens: {}\n"},
			edit:  func(f []File) (*EditResult, error) { return SetSetting(f, SettingTokenMaxTTL, "24h") },
			want:  map[string]string{"settings.cue": pkg + "tokens: {max_ttl: \"24h\"}\n"},
		},
		{
			name:  "quoted label, other file untouched",
			files: map[string]string{"a.cue": pkg + "\"approved\": [\n\t\"a.example.com\", // first\n]\n", "b.cue": pkg + "cert_validity: \"1h\"\n"},
			edit:  func(f []File) (*EditResult, error) { return AddApproved(f, "", "b.example.com") },
			want:  map[string]string{"a.cue": pkg + "\"approved\": [\n\t\"a.example.com\", // first\n\t\"b.example.com\",\n]\n"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var files []File
			for n, d := range c.files {
				files = append(files, File{Name: n, Data: []byte(d)})
			}
			r, err := c.edit(files)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, f := range r.Files {
				if c.files[f.Name] != string(f.Data) {
					got[f.Name] = string(f.Data)
				}
			}
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("changed files (-want +got):\n%s", d)
			}
			var changed []string
			for n := range c.want {
				changed = append(changed, n)
			}
			if d := cmp.Diff(changed, r.Changed); d != "" {
				t.Errorf("Changed (-want +got):\n%s", d)
			}
		})
	}
}
