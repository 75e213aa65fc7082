package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// exampleFiles returns the files of examples/policy by name.
func exampleFiles(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	names, err := filepath.Glob("../../examples/policy/*.cue")
	if err != nil || len(names) == 0 {
		t.Fatalf("no example policy: %v", err)
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(n)] = string(b)
	}
	return files
}

// TestNewUserFlow is issue 13's "done when", as a new user would do it: a
// clone of examples/policy in a repository that a server follows;
// vigocli approved add '*.stage.example.com' --commit; the change pushed to
// the branch the server follows; vigocli policy wait --revision HEAD exits
// 0 once the server has polled (interval 1s); and the real agent enrolls a
// host under *.stage.example.com, which it could not before.
func TestNewUserFlow(t *testing.T) {
	repo := gitsynctest.NewRepo(t)
	repo.Commit(exampleFiles(t), "examples/policy")
	repo.Push()
	in := gitPolicyServer(t, repo, "", time.Second)
	agent := filepath.Join(t.TempDir(), "vigo")
	if b, err := exec.Command("go", "build", "-o", agent, "../vigo").CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, b)
	}
	register := func(host string) servertest.Result {
		return servertest.Exec(t, nil, agent, "register", "--server", in.URL, "--hostname", host, "--config-dir", t.TempDir())
	}
	if r := register("x.stage.example.com"); r.Code == 0 || !strings.Contains(r.Stderr, "no rule allows x.stage.example.com") {
		t.Fatalf("before the change, x.stage.example.com enrolled: %s", r)
	}

	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		base := []string{"--server", in.URL, "--ca-file", filepath.Join(in.DataDir, "tls", "ca"), "--admin-token-file", in.AdminTokenFile}
		code := run(&globals{stdout: &out, stderr: &errb}, append(base, args...))
		return code, out.String(), errb.String()
	}
	code, out, errs := cli("approved", "add", "*.stage.example.com", "--commit", "--dir", repo.Work)
	if code != 0 || !strings.Contains(out, "committed ") {
		t.Fatalf("approved add --commit: %d\n%s\n%s", code, out, errs)
	}
	repo.Git("push", "--quiet", "origin", "HEAD:main")
	head := repo.Git("rev-parse", "HEAD")

	start := time.Now()
	code, out, errs = cli("policy", "wait", "--revision", head, "--dir", repo.Work, "--timeout", "2m", "--interval", "100ms")
	if code != 0 || !strings.Contains(out, "revision "+head+" is active") {
		t.Fatalf("policy wait: %d\n%s\n%s", code, out, errs)
	}
	t.Logf("policy wait returned after %s (poll interval 1s)", time.Since(start).Round(time.Millisecond))

	r := register("x.stage.example.com")
	if r.Code != 0 || !strings.Contains(r.Stdout, "registered x.stage.example.com as envoy ") {
		t.Fatalf("after the change: %s", r)
	}
	code, out, _ = cli("envoys", "show", "x.stage.example.com", "-o", "json")
	if code != 0 || !strings.Contains(out, `"rule": "approved \"*.stage.example.com\""`) || !strings.Contains(out, `"policy_revision": "`+head+`"`) {
		t.Errorf("envoy: %d\n%s", code, out)
	}
}
