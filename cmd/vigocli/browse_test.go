package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// cliRun is one in-process run of vigocli against a server.
type cliRun struct {
	code           int
	stdout, stderr string
}

// cliOpts tune a run: what stdin holds and whether it is a terminal.
type cliOpts struct {
	stdin    string
	terminal bool
}

func runCLI(t *testing.T, in *servertest.Instance, o cliOpts, args ...string) cliRun {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdout: &out, stderr: &errb, stdin: strings.NewReader(o.stdin), terminal: func() bool { return o.terminal }}
	base := []string{"--server", in.URL, "--ca-file", filepath.Join(in.DataDir, "tls", "ca"), "--admin-token-file", in.AdminTokenFile}
	code := run(g, append(base, args...))
	return cliRun{code, out.String(), errb.String()}
}

// hostnamesIn returns the hostnames of an envoys list table, in order.
func hostnamesIn(table string) []string {
	var hs []string
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 {
			hs = append(hs, f[1])
		}
	}
	return hs
}

// nextPage returns the arguments of the next-page command a notice names.
func nextPage(t *testing.T, notice, cmd string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  vigocli ` + cmd + ` (.*)$`).FindStringSubmatch(notice)
	if m == nil {
		t.Fatalf("no next page in the notice:\n%s", notice)
	}
	var args []string
	for _, a := range strings.Fields(m[1]) {
		args = append(args, strings.Trim(strings.ReplaceAll(a, "='", "="), "'"))
	}
	return append(strings.Fields(cmd), args...)
}

func TestEnvoysListAgainstServer(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	hosts := []string{"d.approved.test", "a.approved.test", "c.approved.test", "b.approved.test", "e.approved.test"}
	for _, h := range hosts {
		if c, body := in.Register(t, servertest.NewIdentity(t, h).Req); c != 200 {
			t.Fatalf("register %s: %d %s", h, c, body)
		}
	}
	if r := runCLI(t, in, cliOpts{}, "envoys", "revoke", "e.approved.test", "--reason", "test"); r.code != 0 {
		t.Fatalf("revoke: %+v", r)
	}
	active := []string{"a.approved.test", "b.approved.test", "c.approved.test", "d.approved.test"}

	r := runCLI(t, in, cliOpts{}, "envoys", "list")
	if got := hostnamesIn(r.stdout); r.code != 0 || !slices.Equal(got, active) || r.stderr != "" {
		t.Fatalf("envoys list: revoked ones hidden, by hostname: got %v (exit %d)\n%s%s", got, r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "LAST SEEN") || !strings.Contains(r.stdout, " never\n") {
		t.Errorf("envoys list: envoys that never checked in:\n%s", r.stdout)
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "--status", "all")
	if got := hostnamesIn(r.stdout); !slices.Equal(got, append(slices.Clone(active), "e.approved.test")) {
		t.Errorf("--status all: %v", got)
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "--status", "revoked")
	if got := hostnamesIn(r.stdout); !slices.Equal(got, []string{"e.approved.test"}) {
		t.Errorf("--status revoked: %v", got)
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "--sort=-hostname")
	if got := hostnamesIn(r.stdout); !slices.Equal(got, []string{"d.approved.test", "c.approved.test", "b.approved.test", "a.approved.test"}) {
		t.Errorf("--sort=-hostname: %v", got)
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "--sort", "created")
	if got := hostnamesIn(r.stdout); !slices.Equal(got, hosts[:4]) {
		t.Errorf("--sort created: %v, want %v", got, hosts[:4])
	}

	// Pages: the notice on stderr names the command of the next page.
	var paged []string
	args := []string{"envoys", "list", "--limit", "3", "--sort", "created"}
	for range 5 {
		r = runCLI(t, in, cliOpts{}, args...)
		if r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
		paged = append(paged, hostnamesIn(r.stdout)...)
		if r.stderr == "" {
			break
		}
		if !strings.Contains(r.stderr, "more envoys match") {
			t.Fatalf("notice: %s", r.stderr)
		}
		args = nextPage(t, r.stderr, "envoys list")
	}
	if !slices.Equal(paged, hosts[:4]) {
		t.Errorf("pages: %v, want %v", paged, hosts[:4])
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "--limit", "1", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &[]apiv1.Envoy{}); err != nil || !strings.Contains(r.stderr, "more envoys match") {
		t.Errorf("-o json --limit 1: %v %+v", err, r)
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "--limit", "1", "--all")
	if r.code != 2 {
		t.Errorf("--limit with --all: %+v", r)
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "--all", "--hostname", "?.approved.test", "--status", "all")
	if got := hostnamesIn(r.stdout); len(got) != 5 || r.stderr != "" {
		t.Errorf("--all --hostname: %v %s", got, r.stderr)
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "--hostname", "*.approved.test", "--limit", "2")
	if got := hostnamesIn(r.stdout); !slices.Equal(got, active[:2]) || !strings.Contains(r.stderr, "--after ") {
		t.Errorf("--hostname GLOB --limit 2: %v\n%s", got, r.stderr)
	}

	// Filters.
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "--method", "approved", "--rule", `approved "*.approved.test"`)
	if got := hostnamesIn(r.stdout); !slices.Equal(got, active) {
		t.Errorf("--method --rule: %v\n%s%s", got, r.stdout, r.stderr)
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "--method", "token")
	if got := hostnamesIn(r.stdout); len(got) != 0 {
		t.Errorf("--method token: %v", got)
	}
	if r = runCLI(t, in, cliOpts{}, "envoys", "list", "--stale", "1h"); len(hostnamesIn(r.stdout)) != 0 {
		t.Errorf("--stale 1h: just enrolled envoys are not stale:\n%s", r.stdout)
	}
	if r = runCLI(t, in, cliOpts{}, "envoys", "list", "--stale", "1ns"); len(hostnamesIn(r.stdout)) != 4 {
		t.Errorf("--stale 1ns: every envoy is:\n%s", r.stdout)
	}
	if r = runCLI(t, in, cliOpts{}, "envoys", "list", "--version", "9.9.9"); len(hostnamesIn(r.stdout)) != 0 {
		t.Errorf("--version 9.9.9:\n%s", r.stdout)
	}
	for _, bad := range [][]string{{"--status", "gone"}, {"--sort", "size"}, {"--stale", "soon"}, {"--limit", "0"}, {"--after", "nonsense"}} {
		r = runCLI(t, in, cliOpts{}, append([]string{"envoys", "list"}, bad...)...)
		if r.code != 2 && !(bad[0] == "--after" && r.code == 1) || r.stdout != "" || !strings.HasPrefix(r.stderr, "vigocli: ") {
			t.Errorf("envoys list %v: %+v", bad, r)
		}
	}

	// Output formats.
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "-o", "wide")
	if !strings.Contains(r.stdout, "VERSION") || !strings.Contains(r.stdout, "linux/amd64") || !strings.Contains(r.stdout, "CERT EXPIRES") ||
		!regexp.MustCompile(`(\d+s ago|just now) +in \d+d`).MatchString(r.stdout) {
		t.Errorf("-o wide:\n%s", r.stdout)
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "-o", "json")
	var es []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &es); err != nil || len(es) != 4 {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	created, _ := es[0]["created_at"].(string)
	if _, err := time.Parse(time.RFC3339Nano, created); err != nil || !(strings.HasSuffix(created, "Z") || regexp.MustCompile(`[+-]\d\d:\d\d$`).MatchString(created)) {
		t.Errorf("created_at %q: not RFC 3339 with a zone", created)
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "list", "-o", "yaml")
	var ys []apiYAMLEnvoy
	if err := yaml.Unmarshal([]byte(r.stdout), &ys); err != nil || len(ys) != 4 || ys[0].Hostname != "a.approved.test" || ys[0].Status != "active" {
		t.Errorf("-o yaml: %v %+v\n%s", err, ys, r.stdout)
	}
}

type apiYAMLEnvoy struct {
	Hostname string `yaml:"hostname"`
	Status   string `yaml:"status"`
}

func TestEnvoysRevokeDryRunAndPrompt(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	if c, body := in.Register(t, servertest.NewIdentity(t, "w.approved.test").Req); c != 200 {
		t.Fatalf("register: %d %s", c, body)
	}
	uuid := in.Envoy(t, "w.approved.test").UUID
	status := func() string { return in.Envoy(t, uuid).Status }

	r := runCLI(t, in, cliOpts{}, "envoys", "revoke", "w.approved.test", "--reason", "old", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "would revoke envoy ") || !strings.Contains(r.stdout, "nothing was changed") || status() != "active" {
		t.Fatalf("--dry-run: %+v, status %s", r, status())
	}
	// A terminal is asked; anything but yes keeps the envoy.
	r = runCLI(t, in, cliOpts{terminal: true, stdin: "n\n"}, "envoys", "revoke", "w.approved.test", "--reason", "old")
	if r.code != 1 || !strings.Contains(r.stderr, "Revoke envoy ") || !strings.Contains(r.stderr, "[y/N]") || status() != "active" {
		t.Fatalf("answered n: %+v, status %s", r, status())
	}
	r = runCLI(t, in, cliOpts{terminal: true, stdin: "y\n"}, "envoys", "revoke", "w.approved.test", "--reason", "old")
	if r.code != 0 || !strings.Contains(r.stdout, "revoked") || status() != "revoked" {
		t.Fatalf("answered y: %+v, status %s", r, status())
	}
	r = runCLI(t, in, cliOpts{}, "envoys", "revoke", uuid, "--reason", "old", "--dry-run")
	if r.code != 1 || !strings.Contains(r.stderr, "is revoked already") {
		t.Errorf("--dry-run of a revoked envoy: %+v", r)
	}

	// Not a terminal: no question (scripts keep working); --yes on a terminal.
	for _, o := range []struct {
		host string
		opts cliOpts
		args []string
	}{
		{"x.approved.test", cliOpts{stdin: ""}, nil},
		{"y.approved.test", cliOpts{terminal: true}, []string{"--yes"}},
	} {
		if c, body := in.Register(t, servertest.NewIdentity(t, o.host).Req); c != 200 {
			t.Fatalf("register: %d %s", c, body)
		}
		id := in.Envoy(t, o.host).UUID
		r = runCLI(t, in, o.opts, append([]string{"envoys", "revoke", o.host, "--reason", "old"}, o.args...)...)
		if r.code != 0 || r.stderr != "" || in.Envoy(t, id).Status != "revoked" {
			t.Errorf("revoke %s %v: %+v", o.host, o.args, r)
		}
	}
}

func TestAuditAgainstServer(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	var ids []string
	for i := range 4 {
		ids = append(ids, in.Token(t, []string{"a", "b", "c", "d"}[i]+".example.com", "1h").ID)
	}
	if c, body := in.Register(t, servertest.NewIdentity(t, "z.approved.test").Req); c != 200 {
		t.Fatalf("register: %d %s", c, body)
	}
	tokenIDs := func(out string) []string {
		var evs []apiv1.AuditEvent
		if err := json.Unmarshal([]byte(out), &evs); err != nil {
			t.Fatalf("audit -o json: %v\n%s", err, out)
		}
		var got []string
		for _, e := range evs {
			got = append(got, e.TokenID)
		}
		return got
	}
	newest := slices.Clone(ids)
	slices.Reverse(newest)

	r := runCLI(t, in, cliOpts{}, "audit", "--kind", "token.created")
	if r.code != 0 || !strings.Contains(r.stdout, "token.created") || strings.Contains(r.stdout, "registration") {
		t.Errorf("audit --kind token.created (table):\n%s%s", r.stdout, r.stderr)
	}
	r = runCLI(t, in, cliOpts{}, "audit", "--kind", "token.created", "-o", "json")
	if got := tokenIDs(r.stdout); r.code != 0 || !slices.Equal(got, newest) || r.stderr != "" {
		t.Fatalf("audit --kind token.created: newest first: got %v, want %v\n%s%s", got, newest, r.stdout, r.stderr)
	}
	// --limit: the newest, and a notice naming the next page.
	var paged []string
	args := []string{"audit", "--kind", "token.created", "--limit", "3", "-o", "json"}
	for range 4 {
		r = runCLI(t, in, cliOpts{}, args...)
		paged = append(paged, tokenIDs(r.stdout)...)
		if r.stderr == "" {
			break
		}
		if !strings.Contains(r.stderr, "more events match") {
			t.Fatalf("notice: %s", r.stderr)
		}
		args = nextPage(t, r.stderr, "audit")
	}
	if !slices.Equal(paged, newest) {
		t.Errorf("pages: %v, want %v", paged, newest)
	}
	r = runCLI(t, in, cliOpts{}, "audit", "--hostname", "z.approved.test", "-o", "json")
	var evs []apiv1.AuditEvent
	if err := json.Unmarshal([]byte(r.stdout), &evs); err != nil || len(evs) != 1 || evs[0].Type != "registration" {
		t.Errorf("--hostname: %v %+v", err, evs)
	}
	r = runCLI(t, in, cliOpts{}, "audit", "--actor", "admin", "--kind", "registration,token.created", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &evs); err != nil || len(evs) != 4 {
		t.Errorf("--actor admin: %v %d events\n%s", err, len(evs), r.stdout)
	}
	r = runCLI(t, in, cliOpts{}, "audit", "--actor", "nobody", "-o", "yaml")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("--actor nobody -o yaml: %+v", r)
	}
}

// TestAuditFollow runs audit --follow against a real server while tokens
// are created, and ends it as Ctrl-C does (its context).
func TestAuditFollow(t *testing.T) {
	in := servertest.Start(t, servertest.Options{})
	first := in.Token(t, "first.example.com", "1h").ID
	var out, errb servertest.SyncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int)
	go func() {
		g := &globals{stdout: &out, stderr: &errb}
		base := []string{"--server", in.URL, "--ca-file", filepath.Join(in.DataDir, "tls", "ca"), "--admin-token-file", in.AdminTokenFile}
		done <- runContext(ctx, g, append(base, "audit", "--follow", "--kind", "token.created", "-o", "json", "--interval", "50ms"))
	}()
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(out.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("audit --follow never printed %q:\n%s\n%s", what, out.String(), errb.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(`"token_id":"` + first + `"`)
	var later []string
	for _, h := range []string{"second.example.com", "third.example.com"} {
		id := in.Token(t, h, "1h").ID
		later = append(later, id)
		waitFor(`"token_id":"` + id + `"`)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("audit --follow ended with %d: %s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("audit --follow did not end with its context")
	}
	// One JSON object a line, oldest first, each event once.
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var e apiv1.AuditEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, e.TokenID)
	}
	if want := append([]string{first}, later...); !slices.Equal(got, want) {
		t.Errorf("followed %v, want %v", got, want)
	}
}
