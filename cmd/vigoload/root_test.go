package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/agent/fleetsim"
	"github.com/vigo-enroll/vigo/server/servertest"
	"github.com/vigo-enroll/vigo/server/store"
)

const benchPolicy = `package policy

trusted_enrollment: [{name: "bench", pattern: "*.bench.test", cidrs: ["127.0.0.0/8", "::1/128"]}]
`

// runBench runs `vigoload args…` and decodes its JSON report.
func runBench(t *testing.T, args ...string) (*fleetsim.Report, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCmd(&stdout, &stderr)
	root.SetArgs(append([]string{"--json"}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("vigoload: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep fleetsim.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("decode report: %v\n%s", err, stdout.String())
	}
	return &rep, stderr.String()
}

// TestBenchAgainstServer runs the simulator against a real server: 50
// envoys register on the trusted path and check in for one second, then a
// second run reuses them from the state file.
func TestBenchAgainstServer(t *testing.T) {
	in := servertest.Start(t, servertest.Options{Policy: benchPolicy})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, in.CA().CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	stateFile := filepath.Join(dir, "fleet.json")
	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(in.AdminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{"--server", in.URL, "--ca-file", caFile, "--envoys", "50", "--duration", "1s",
		"--connections", "8", "--state", stateFile, "--admin-token-file", tokenFile}

	rep, stderr := runBench(t, common...)
	if rep.Registration.OK != 50 || rep.Registration.Errors != 0 {
		t.Errorf("registration: %d ok, %d errors (first: %s); want 50, 0", rep.Registration.OK, rep.Registration.Errors, rep.Registration.FirstError)
	}
	if rep.Checkins.OK == 0 || rep.Checkins.Errors != 0 {
		t.Errorf("check-ins: %d ok, %d errors (first: %s); want some, 0", rep.Checkins.OK, rep.Checkins.Errors, rep.Checkins.FirstError)
	}
	if rep.Checkins.PerSec <= 0 || rep.Checkins.P50 <= 0 || rep.Checkins.P99 < rep.Checkins.P50 || rep.RPCP99 <= 0 {
		t.Errorf("check-in figures missing: %+v rpc p99 %v", rep.Checkins, rep.RPCP99)
	}
	if rep.Handshakes < rep.Checkins.OK {
		t.Errorf("handshakes = %d with 8 connections for 50 envoys; want one per check-in (%d)", rep.Handshakes, rep.Checkins.OK)
	}
	if len(rep.ServerRSS) != 1 || rep.ServerRSS[0].Bytes <= 0 || rep.ServerRSS[0].Error != "" {
		t.Errorf("server RSS = %+v; want one figure from /metrics", rep.ServerRSS)
	}
	if !strings.Contains(stderr, "saved 50 envoys") {
		t.Errorf("stderr does not report the saved state:\n%s", stderr)
	}
	// Every envoy is enrolled on the server, on the trusted path.
	es, err := in.Store().ListEnvoys(t.Context(), store.EnvoyFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 50 {
		t.Errorf("server has %d envoys, want 50", len(es))
	}

	// Second run: reuses the state, registers nobody; with one connection
	// per envoy the connections are persistent.
	rep2, _ := runBench(t, append(common, "--connections", "50", "--rate", "200/s")...)
	if rep2.Reused != 50 || rep2.Registration.OK+rep2.Registration.Errors != 0 {
		t.Errorf("second run: reused %d, registered %d; want 50, 0", rep2.Reused, rep2.Registration.OK)
	}
	if !rep2.Persistent || rep2.Checkins.OK == 0 || rep2.Checkins.Errors != 0 {
		t.Errorf("second run: persistent %v, %d ok, %d errors (first: %s)", rep2.Persistent, rep2.Checkins.OK, rep2.Checkins.Errors, rep2.Checkins.FirstError)
	}
	if rep2.Handshakes > 50 {
		t.Errorf("second run: %d handshakes for 50 persistent connections", rep2.Handshakes)
	}

	// Third run: a connection per check-in, resuming sessions: after a
	// warm-up (each envoy's first handshake), every handshake resumes.
	rep3, _ := runBench(t, append(common, "--resume", "--rate", "300/s")...)
	if rep3.Checkins.OK == 0 || rep3.Checkins.Errors != 0 {
		t.Errorf("resuming run: %d ok, %d errors (first: %s)", rep3.Checkins.OK, rep3.Checkins.Errors, rep3.Checkins.FirstError)
	}
	if rep3.Resumed != rep3.Handshakes || rep3.Resumed == 0 || rep3.WarmUpElapsed <= 0 {
		t.Errorf("resuming run: %d of %d handshakes resumed after a warm-up of %s; want all", rep3.Resumed, rep3.Handshakes, rep3.WarmUpElapsed)
	}
	if rep.Resumed != 0 {
		t.Errorf("first run resumed %d handshakes without --resume", rep.Resumed)
	}
	if rep3.ServerCPUPerCheckin <= 0 {
		t.Errorf("server CPU per check-in not reported: %v", rep3.ServerCPUPerCheckin)
	}
}

// TestBenchText checks the human report's fields.
func TestBenchText(t *testing.T) {
	in := servertest.Start(t, servertest.Options{Policy: benchPolicy})
	var stdout, stderr bytes.Buffer
	root := newRootCmd(&stdout, &stderr)
	root.SetArgs([]string{"--server", in.URL, "--insecure", "--envoys", "5", "--duration", "500ms", "--quiet"})
	if err := root.Execute(); err != nil {
		t.Fatalf("vigoload: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"registration   5 ok, 0 errors", "checkin ", "p50 ", "p99 ", "server rss ", "persistent connections"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("--quiet still wrote:\n%s", stderr.String())
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"0", 0, true}, {"1667", 1667, true}, {"1667/s", 1667, true}, {" 2.5/s ", 2.5, true},
		{"-1", 0, false}, {"fast", 0, false}, {"10/m", 0, false},
	} {
		got, err := parseRate(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseRate(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
