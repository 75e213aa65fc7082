package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/schemas/buildinfo"
)

// TestVersion: vigosrv version prints the build in text and JSON.
func TestVersion(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want func(t *testing.T, out string)
	}{
		{"text", []string{"version"}, func(t *testing.T, out string) {
			if want := "vigosrv " + buildinfo.Get().String() + "\n"; out != want {
				t.Errorf("output %q, want %q", out, want)
			}
		}},
		{"json", []string{"version", "-o", "json"}, func(t *testing.T, out string) {
			var b buildinfo.Info
			if err := json.Unmarshal([]byte(out), &b); err != nil || b != buildinfo.Get() {
				t.Errorf("output %q: %v", out, err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			root := newRootCmd(&out, &errb)
			root.SetArgs(c.args)
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			c.want(t, out.String())
		})
	}
	var out, errb bytes.Buffer
	root := newRootCmd(&out, &errb)
	root.SetArgs([]string{"version", "-o", "yaml"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "must be text or json") {
		t.Errorf("-o yaml: %v", err)
	}
}
