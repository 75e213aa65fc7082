package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"github.com/vigo-enroll/vigo/server/servertest"
)

const diffPolicyV1 = `package policy

trusted_enrollment: [{name: "lab", pattern: "*.lab.test", cidrs: ["127.0.0.0/8"]}]
approved: ["*.web.test"]
`

const diffPolicyV2 = `package policy

trusted_enrollment: [{name: "lab", pattern: "*.lab.test", cidrs: ["127.0.0.0/8"]}]
approved: ["*.stage.test"]
revocations: [{hostname: "a.web.test", reason: "compromised"}]
`

// TestDiffAgainstServer: policy diff --against-server compares a checkout
// with the revision the server applies (the policy in a subfolder of the
// repository), computes the impact on the server's envoys, and --replay
// decides the registrations of the audit log again; explain
// --against-server decides with the active policy.
func TestDiffAgainstServer(t *testing.T) {
	repo := gitsynctest.NewRepo(t)
	v1 := repo.Commit(map[string]string{"policy/policy.cue": diffPolicyV1, "README.md": "policy repo\n"}, "v1")
	repo.Push()
	in := gitPolicyServer(t, repo, "policy", time.Hour)
	register := func(host, token string, want int) {
		t.Helper()
		req := servertest.NewIdentity(t, host).Req
		req.Token = token
		if code, body := in.Register(t, req); code != want {
			t.Fatalf("register %s: HTTP %d %s, want %d", host, code, body, want)
		}
	}
	register("a.web.test", "", 200)
	register("b.web.test", "", 200)
	register("db.lab.test", "", 200)
	register("x.stage.test", "", 403)
	register("y.stage.test", "", 403)
	register("laptop.test", in.Token(t, "laptop.test", "1h").Token, 200)

	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		base := []string{"--server", in.URL, "--ca-file", filepath.Join(in.DataDir, "tls", "ca"), "--admin-token-file", in.AdminTokenFile}
		code := run(&globals{stdout: &out, stderr: &errb}, append(base, args...))
		return code, out.String(), errb.String()
	}
	// The pull request: a change in the work clone.
	polDir := filepath.Join(repo.Work, "policy")
	if err := os.WriteFile(filepath.Join(polDir, "policy.cue"), []byte(diffPolicyV2), 0o644); err != nil {
		t.Fatal(err)
	}

	code, out, errs := cli("policy", "diff", "--against-server", polDir, "--replay", "7d")
	if code != 0 {
		t.Fatalf("diff: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{
		"policy diff " + v1[:12] + ":" + polDir + " -> " + polDir + ": 2 added, 1 removed, 0 changed",
		"  + *.stage.test\n  - *.web.test\n",
		"impact on 4 active envoys: 1 revoked, 1 would not be admitted again",
		"  revoked: a.web.test (",
		"  would not be admitted again (stays enrolled): b.web.test (",
		"replay of the registrations of the last 7d: 6 attempts from 6 hosts\n",
		"  2 past enrollments would now be refused (2 hosts): b.web.test, a.web.test\n",
		"    a.web.test from 127.0.0.1 at ",
		`, admitted by approved "*.web.test": now refused: hostname a.web.test is revoked by policy: compromised`,
		"  2 past refusals would now be admitted (2 hosts): y.stage.test, x.stage.test\n",
		`    x.stage.test from 127.0.0.1 at `,
		`, refused: now admitted by approved "*.stage.test"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diff output lacks %q:\n%s", want, out)
		}
	}

	// JSON, and the newest attempts only (not the oldest, a.web.test), read
	// in pages.
	defer func(n int) { replayPage = n }(replayPage)
	replayPage = 2
	code, out, errs = cli("policy", "diff", "--against-server", polDir, "--replay", "168h", "--replay-limit", "5", "--format", "json")
	var r diffReport
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Replay == nil {
		t.Fatalf("diff json: exit %d\n%s\n%s", code, out, errs)
	}
	if rp := r.Replay; rp.Events != 5 || !rp.Capped || rp.Attempts != 5 || len(rp.NowRefused) != 1 || len(rp.NowAdmitted) != 2 || rp.Period != "168h" {
		t.Errorf("replay: events %d capped %v attempts %d refused %d admitted %d period %q",
			rp.Events, rp.Capped, rp.Attempts, len(rp.NowRefused), len(rp.NowAdmitted), rp.Period)
	}

	// GitHub annotations name the past enrollments now refused.
	code, out, _ = cli("policy", "diff", "--against-server", polDir, "--replay", "7d", "--format", "github")
	if code != 0 || !strings.Contains(out, "::warning title=policy diff%3A past enrollments now refused::2 enrollments of the last 7d would now be refused (2 hosts): b.web.test, a.web.test") {
		t.Errorf("github: %d\n%s", code, out)
	}

	// --base: a revision of the checkout.
	code, out, errs = cli("policy", "diff", "--base", "HEAD", polDir)
	if code != 0 || !strings.Contains(out, "policy diff HEAD:"+polDir+" -> "+polDir+": 2 added, 1 removed") || !strings.Contains(out, "impact on envoys: not computed") {
		t.Errorf("--base HEAD: %d\n%s\n%s", code, out, errs)
	}

	// explain --against-server decides with the active policy (v1).
	code, out, errs = cli("policy", "explain", "--against-server", "--hostname", "x.stage.test", "--ip", "203.0.113.9")
	if code != 0 || !strings.Contains(out, "decision: DENY") || !strings.Contains(out, "revision: "+v1) {
		t.Errorf("explain x.stage.test: %d\n%s\n%s", code, out, errs)
	}
	code, out, _ = cli("policy", "explain", "--against-server", "--hostname", "c.web.test", "--ip", "203.0.113.9", "-o", "json")
	if code != 0 || !strings.Contains(out, `"rule": "approved \"*.web.test\""`) {
		t.Errorf("explain c.web.test: %d\n%s", code, out)
	}
	code, _, errs = cli("policy", "explain", "--against-server", "--dir", polDir, "--hostname", "c.web.test")
	if code != 2 || !strings.Contains(errs, "--dir and --revision do not apply") {
		t.Errorf("explain --against-server --dir: %d %s", code, errs)
	}

	// The checkout must have the server's revision.
	other := gitsynctest.NewRepo(t)
	other.Commit(map[string]string{"policy.cue": diffPolicyV2}, "unrelated")
	code, _, errs = cli("policy", "diff", "--against-server", other.Work)
	if code != 2 || !strings.Contains(errs, "does not have the server's active revision "+v1+": git fetch it") {
		t.Errorf("checkout without the revision: %d %s", code, errs)
	}
	code, _, errs = cli("policy", "diff", "--against-server", t.TempDir())
	if code != 2 || !strings.Contains(errs, "is not in a Git checkout of the policy repository") {
		t.Errorf("no checkout: %d %s", code, errs)
	}
	code, _, errs = cli("policy", "diff", "--against-server", "a", "b")
	if code != 2 || !strings.Contains(errs, "takes at most one folder") {
		t.Errorf("two folders: %d %s", code, errs)
	}
	code, _, errs = cli("policy", "diff", "--against-server", polDir, "--replay", "a week")
	if code != 2 || !strings.Contains(errs, "write a period such as 7d") {
		t.Errorf("bad period: %d %s", code, errs)
	}
}
