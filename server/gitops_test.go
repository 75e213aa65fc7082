package server_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
)

const webhookSecret = "0123456789abcdef-webhook"

const basePolicy = `package policy

trusted_enrollment: []
approved: ["*.base.test"]
`

func gitServer(t testing.TB, repo *gitsynctest.Repo, http *gitsynctest.HTTPServer, data string, interval time.Duration) *servertest.Instance {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "webhook")
	if err := os.WriteFile(secret, []byte(webhookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return servertest.Start(t, servertest.Options{DataDir: data, Config: func(c *server.Config) {
		c.Policy.Dir = ""
		c.Policy.Git = &server.GitConfig{URL: http.URL, Ref: "main", Interval: server.Duration(interval)}
		c.Policy.WebhookSecretFile = secret
	}})
}

func policyStatus(t testing.TB, in *servertest.Instance) apiv1.PolicyStatus {
	t.Helper()
	code, body := in.Do(t, "GET", "/api/v1/policy/status", nil, true)
	if code != 200 {
		t.Fatalf("policy status: HTTP %d %s", code, body)
	}
	return decode[apiv1.PolicyStatus](t, body)
}

func waitActive(t *testing.T, in *servertest.Instance, rev string) apiv1.PolicyStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := policyStatus(t, in)
		if st.Active != nil && st.Active.Revision == rev {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision %s not active within 30s; status %+v", rev, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func webhook(t testing.TB, in *servertest.Instance, event, body, secret string) int {
	t.Helper()
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	req, _ := http.NewRequest("POST", in.URL+"/api/v1/policy/webhook", strings.NewReader(body))
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := in.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestGitOpsWebhookInvalidCommitAndStatus(t *testing.T) {
	repo := gitsynctest.NewRepo(t)
	c1 := repo.Commit(map[string]string{"policy.cue": basePolicy}, "base")
	repo.Push()
	hs := gitsynctest.NewHTTPServer(t, repo.Bare, gitsynctest.HTTPOptions{})
	in := gitServer(t, repo, hs, "", time.Hour)
	st := waitActive(t, in, c1)
	if !st.Healthy || st.Replica != "test" {
		t.Fatalf("initial status: %+v", st)
	}

	// A valid commit, announced by a webhook with a bad signature: refused, no sync.
	c2 := repo.Commit(map[string]string{"policy.cue": strings.Replace(basePolicy, `"*.base.test"`, `"*.base.test", "*.new.test"`, 1)}, "approve *.new.test")
	repo.Push()
	lists := hs.Lists()
	if code := webhook(t, in, "push", `{"after":"`+c2+`"}`, "wrong-secret-wrong-secret"); code != 401 {
		t.Fatalf("bad signature: HTTP %d, want 401", code)
	}
	if hs.Lists() != lists {
		t.Fatal("a webhook with a bad signature made the server poll the remote")
	}
	if code := webhook(t, in, "ping", `{"zen":"hi"}`, webhookSecret); code != 200 {
		t.Fatalf("ping: HTTP %d", code)
	}
	// The right signature: the new commit becomes active at once.
	if code := webhook(t, in, "push", `{"after":"0000"}`, webhookSecret); code != 202 {
		t.Fatalf("webhook: HTTP %d, want 202", code)
	}
	waitActive(t, in, c2)
	if code, body := in.Register(t, servertest.NewIdentity(t, "a.new.test").Req); code != 200 {
		t.Fatalf("register after the webhook sync: %d %s", code, body)
	}

	// A commit with a typo: rejected, the previous revision stays active,
	// the status names the file and line.
	c3 := repo.Commit(map[string]string{"policy.cue": "package policy\n\ntrusted_enrolment: []\napproved: []\n"}, "typo")
	repo.Push()
	code, body := in.Do(t, "POST", "/api/v1/policy/sync", nil, true)
	if code != 200 {
		t.Fatalf("sync: %d %s", code, body)
	}
	st = decode[apiv1.PolicySyncResult](t, body).Status
	if st.Active == nil || st.Active.Revision != c2 || st.Healthy {
		t.Fatalf("after an invalid commit: active %+v healthy %v", st.Active, st.Healthy)
	}
	if a := st.Attempted; a == nil || a.Revision != c3 || a.Valid || len(a.Errors) == 0 || a.Errors[0].File != "policy.cue" || a.Errors[0].Line != 3 {
		t.Fatalf("attempted: %+v", st.Attempted)
	}
	if code, body := in.Register(t, servertest.NewIdentity(t, "b.new.test").Req); code != 200 {
		t.Fatalf("the last good policy no longer applies: %d %s", code, body)
	}

	// The next valid commit is applied.
	c4 := repo.Commit(map[string]string{"policy.cue": basePolicy}, "fix")
	repo.Push()
	if code, _ := in.Do(t, "POST", "/api/v1/policy/sync", nil, true); code != 200 {
		t.Fatal("sync failed")
	}
	if st := waitActive(t, in, c4); !st.Healthy {
		t.Fatalf("after the fix: %+v", st)
	}
	if code, _ := in.Register(t, servertest.NewIdentity(t, "c.new.test").Req); code != 403 {
		t.Fatalf("a pattern removed by the last commit still admits: HTTP %d", code)
	}
	// The audit trail has both verdicts with the replica.
	code, body = in.Do(t, "GET", "/api/v1/audit?since=1h&limit=0", nil, true)
	var applied, rejected int
	for _, e := range decode[[]apiv1.AuditEvent](t, body) {
		switch {
		case e.Type == "policy.applied" && e.Replica == "test":
			applied++
		case e.Type == "policy.rejected" && e.Revision == c3:
			rejected++
		}
	}
	if code != 200 || applied < 3 || rejected != 1 {
		t.Fatalf("audit: %d applied, %d rejected", applied, rejected)
	}
}

func TestGitOpsPollAndRestartWithRemoteDown(t *testing.T) {
	repo := gitsynctest.NewRepo(t)
	c1 := repo.Commit(map[string]string{"policy.cue": basePolicy}, "base")
	repo.Push()
	hs := gitsynctest.NewHTTPServer(t, repo.Bare, gitsynctest.HTTPOptions{})
	data := t.TempDir()
	in := gitServer(t, repo, hs, data, time.Second)
	waitActive(t, in, c1)
	c2 := repo.Commit(map[string]string{"policy.cue": strings.Replace(basePolicy, "base.test", "polled.test", 1)}, "poll me")
	repo.Push()
	waitActive(t, in, c2) // within one 1s poll, no webhook
	in.Stop()

	// Restart with the remote down: the persisted last good policy serves.
	hs.Stop()
	in2 := gitServer(t, repo, hs, data, time.Second)
	st := policyStatus(t, in2)
	if st.Active == nil || st.Active.Revision != c2 {
		t.Fatalf("after a restart with the remote down: active %+v", st.Active)
	}
	if code, body := in2.Register(t, servertest.NewIdentity(t, "x.polled.test").Req); code != 200 {
		t.Fatalf("persisted policy not served: %d %s", code, body)
	}
	// The remote comes back: a new commit is followed again.
	hs.Start()
	c3 := repo.Commit(map[string]string{"policy.cue": basePolicy}, "back")
	repo.Push()
	waitActive(t, in2, c3)
}
