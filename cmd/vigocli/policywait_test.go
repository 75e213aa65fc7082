package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
)

const waitPolicy = `package policy

trusted_enrollment: []
approved: ["*.base.test"]
`

// gitPolicyServer starts a server that follows the branch main of repo (a
// file:// remote): the policy folder path ("" for the top), polled every
// interval (tests that want to choose when sync it themselves).
func gitPolicyServer(t *testing.T, repo *gitsynctest.Repo, path string, interval time.Duration) *servertest.Instance {
	t.Helper()
	return servertest.Start(t, servertest.Options{Config: func(c *server.Config) {
		c.Policy.Dir = ""
		c.Policy.Git = &server.GitConfig{URL: repo.URL(), Ref: "main", Path: path, Interval: server.Duration(interval)}
	}})
}

func syncPolicy(t *testing.T, in *servertest.Instance) {
	t.Helper()
	if code, body := in.Do(t, "POST", "/api/v1/policy/sync", nil, true); code != 200 {
		t.Fatalf("sync: HTTP %d %s", code, body)
	}
}

// TestPolicyWait runs vigocli policy wait against a real server following
// a real Git repository: applied (the revision, or a later one that
// contains it), refused (the revision, or a later one that contains it),
// and the timeout.
func TestPolicyWait(t *testing.T) {
	repo := gitsynctest.NewRepo(t)
	first := repo.Commit(map[string]string{"policy.cue": waitPolicy}, "base")
	repo.Push()
	in := gitPolicyServer(t, repo, "", time.Hour)
	wait := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		base := []string{"--server", in.URL, "--ca-file", filepath.Join(in.DataDir, "tls", "ca"), "--admin-token-file", in.AdminTokenFile,
			"policy", "wait", "--interval", "20ms"}
		code := run(&globals{stdout: &out, stderr: &errb}, append(base, args...))
		return code, out.String(), errb.String()
	}
	type want struct {
		code           int
		stdout, stderr string
	}
	check := func(t *testing.T, got [3]any, w want) {
		t.Helper()
		code, out, errs := got[0].(int), got[1].(string), got[2].(string)
		if code != w.code || !strings.Contains(out, w.stdout) || !strings.Contains(errs, w.stderr) {
			t.Errorf("exit %d, want %d\nstdout:\n%s\nwant it to contain %q\nstderr:\n%s\nwant it to contain %q", code, w.code, out, w.stdout, errs, w.stderr)
		}
	}
	run3 := func(args ...string) [3]any {
		c, o, e := wait(args...)
		return [3]any{c, o, e}
	}

	t.Run("applied", func(t *testing.T) {
		check(t, run3("--revision", first, "--dir", repo.Work, "--timeout", "1m"),
			want{0, "revision " + first + " is active on replica test", ""})
		// The commit as an argument, as `policy wait SHA` reads.
		check(t, run3(first, "--dir", repo.Work, "--timeout", "1m"),
			want{0, "revision " + first + " is active on replica test", ""})
		check(t, run3(first, "--revision", first),
			want{2, "", "give the revision once"})
		// Abbreviated, and without a checkout: the exact revision counts.
		check(t, run3("--revision", first[:9], "--dir", t.TempDir(), "--timeout", "1m"),
			want{0, "revision " + first + " is active", ""})
	})

	second := repo.Commit(map[string]string{"policy.cue": strings.Replace(waitPolicy, `"*.base.test"`, `"*.base.test", "*.stage.test"`, 1)}, "stage")
	repo.Push()

	t.Run("timeout", func(t *testing.T) {
		// Pushed, but the server has not synced: the time runs out (what
		// the last status said depends on whether a poll finished).
		check(t, run3("--revision", second, "--dir", repo.Work, "--timeout", "200ms"),
			want{2, "", "revision " + second + " is not active after 200ms: "})
		// Without a checkout the hint says what is missing.
		check(t, run3("--revision", second, "--dir", t.TempDir(), "--timeout", "100ms"),
			want{2, "", "is not a Git checkout of the policy repository: only " + second + " itself counts"})
	})

	t.Run("waits until applied", func(t *testing.T) {
		done := make(chan [3]any, 1)
		go func() { done <- run3("--revision", second, "--dir", repo.Work, "--timeout", "2m") }()
		syncPolicy(t, in)
		check(t, <-done, want{0, "revision " + second + " is active", ""})
	})

	third := repo.Commit(map[string]string{"README.md": "docs\n"}, "docs")
	repo.Push()
	syncPolicy(t, in)
	t.Run("a later revision contains it", func(t *testing.T) {
		check(t, run3("--revision", second, "--dir", repo.Work, "--timeout", "1m"),
			want{0, "revision " + third + " is active on replica test (applied ", ""})
		check(t, run3("--revision", second, "--dir", repo.Work, "--timeout", "1m"),
			want{0, "and it contains " + second, ""})
	})

	bad := repo.Commit(map[string]string{"policy.cue": strings.Replace(waitPolicy, `"*.base.test"`, `"*.base.test", "web[1].test"`, 1)}, "bad")
	repo.Push()
	syncPolicy(t, in)
	t.Run("refused", func(t *testing.T) {
		check(t, run3("--revision", bad, "--dir", repo.Work, "--timeout", "1m"),
			want{1, "revision " + bad + " was refused by replica test (invalid); the last good revision stays active:\n  policy.cue:4:27: approved[1]: \"web[1].test\" is not a hostname pattern", "revision " + bad + " was refused"})
	})
	docs := repo.Commit(map[string]string{"README.md": "more docs\n"}, "docs on top of the bad commit")
	repo.Push()
	syncPolicy(t, in)
	t.Run("a later revision that contains it is refused", func(t *testing.T) {
		check(t, run3("--revision", bad, "--dir", repo.Work, "--timeout", "1m"),
			want{1, "revision " + docs + ", which contains " + bad + ", was refused by replica test: the change cannot apply until a fix is merged", ""})
	})

	t.Run("usage", func(t *testing.T) {
		check(t, run3("--dir", repo.Work), want{2, "", "--revision is required"})
	})
}
