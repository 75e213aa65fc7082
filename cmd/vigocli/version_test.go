package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/buildinfo"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// TestVersionMismatch: vigocli version prints its build; --check-server
// compares it with the server's and exits 1 when they differ; every other
// command warns once on stderr. The server tells its build to
// administrators only.
func TestVersionMismatch(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	srv := buildinfo.Get() // the server runs in this test binary
	base := []string{"--server", in.URL, "--ca-file", filepath.Join(in.DataDir, "tls", "ca"), "--admin-token-file", in.AdminTokenFile}
	cli := func(build buildinfo.Info, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(&globals{stdout: &out, stderr: &errb, build: build}, append(base, args...))
		return code, out.String(), errb.String()
	}
	other := buildinfo.Info{Version: "v0.0.0-20261129123456-0123456789ab", Commit: "0123456789ab", Go: "go1.26.8", Platform: "linux/amd64"}

	cases := []struct {
		name      string
		build     buildinfo.Info
		args      []string
		code      int
		stdout    []string
		stderr    []string
		notStderr string
	}{
		{name: "same build", build: srv, args: []string{"version", "--check-server"}, code: 0,
			stdout: []string{"vigocli " + srv.String() + "\n", "server  " + srv.String() + "\n"}, notStderr: "warning"},
		{name: "other build", build: other, args: []string{"version", "--check-server"}, code: 1,
			stdout: []string{"vigocli v0.0.0-20261129123456-0123456789ab (commit 0123456789ab, go1.26.8, linux/amd64)\n"},
			stderr: []string{"vigocli: this vigocli is v0.0.0-20261129123456-0123456789ab (commit 0123456789ab), the server is " + srv.Version}, notStderr: "warning"},
		{name: "offline", build: other, args: []string{"version"}, code: 0, stdout: []string{"vigocli v0.0.0-"}},
		{name: "warning on another command", build: other, args: []string{"policy", "status"}, code: 0,
			stdout: []string{"Health:     healthy"},
			stderr: []string{"vigocli: warning: this vigocli is v0.0.0-20261129123456-0123456789ab (commit 0123456789ab), the server is " + srv.Version + ": policy vet, explain and diff here may judge differently from the server"}},
		{name: "no warning for the same build", build: srv, args: []string{"policy", "status"}, code: 0, notStderr: "warning"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := cli(c.build, c.args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, out, errs)
			}
			for _, w := range c.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout %q lacks %q", out, w)
				}
			}
			for _, w := range c.stderr {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr %q lacks %q", errs, w)
				}
			}
			if c.notStderr != "" && strings.Contains(errs, c.notStderr) {
				t.Errorf("stderr %q has %q", errs, c.notStderr)
			}
			if strings.Count(errs, "warning") > 1 {
				t.Errorf("warned more than once: %q", errs)
			}
		})
	}

	// -o json.
	code, out, _ := cli(srv, "version", "--check-server", "-o", "json")
	var v struct{ Client, Server buildinfo.Info }
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Client != srv || v.Server.Version != srv.Version {
		t.Errorf("-o json: %d %s", code, out)
	}

	// The build is told with authenticated admin answers only.
	for _, c := range []struct {
		path  string
		admin bool
	}{{"/api/v1/version", true}, {"/api/v1/envoys", true}, {"/healthz", false}, {"/bootstrap", false}, {"/api/v1/version", false}} {
		req, _ := http.NewRequest("GET", in.URL+c.path, nil)
		if c.admin {
			req.Header.Set("Authorization", "Bearer "+in.AdminToken)
		}
		resp, err := in.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get(apiv1.HeaderServerVersion) != ""; got != c.admin {
			t.Errorf("GET %s (admin %v): %s header present = %v", c.path, c.admin, apiv1.HeaderServerVersion, got)
		}
	}
}
