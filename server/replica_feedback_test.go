package server_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/feedback/feedbacktest"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// TestReplicaFeedbackAndControl runs two replicas on one PostgreSQL
// database following one Git repository: both post commit statuses under
// one context without leaving a commit "pending", and a suspension, a
// resume and a pin made through one replica hold on the other.
func TestReplicaFeedbackAndControl(t *testing.T) {
	repo := gitsynctest.NewRepo(t)
	a := repo.Commit(map[string]string{"policy/policy.cue": servertest.DefaultPolicy}, "a")
	repo.Push()
	forge := feedbacktest.New(t, "tok")
	tokFile := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(tokFile, []byte("tok"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs := servertest.StartReplicas(t, 2, servertest.Options{Config: func(c *server.Config) {
		c.Policy.Dir = ""
		c.Policy.Git = &server.GitConfig{URL: repo.URL(), Path: "policy", Interval: server.Duration(time.Hour)}
		c.Policy.Feedback = &server.FeedbackConfig{Kind: "gitea", APIURL: forge.APIURL("gitea"), Repository: "ops/policy", TokenFile: tokFile}
	}})
	sync := func(in *servertest.Instance) apiv1.PolicyStatus {
		t.Helper()
		code, body := in.Do(t, "POST", "/api/v1/policy/sync", nil, true)
		if code != http.StatusOK {
			t.Fatalf("sync: HTTP %d %s", code, body)
		}
		return decode[apiv1.PolicySyncResult](t, body).Status
	}
	control := func(in *servertest.Instance, path string, req any) apiv1.PolicyStatus {
		t.Helper()
		code, body := in.Do(t, "POST", path, req, true)
		if code != http.StatusOK {
			t.Fatalf("%s: HTTP %d %s", path, code, body)
		}
		return decode[apiv1.PolicyStatus](t, body)
	}
	// last returns the last state posted for sha, and whether a "pending"
	// came after a "success" (a replica flipping a status back).
	last := func(sha string) (state string, flipped bool) {
		for _, s := range forge.Statuses() {
			if s.SHA == sha {
				flipped = flipped || state == "success" && s.State == "pending"
				state = s.State
			}
		}
		return state, flipped
	}
	eventually(t, "a applied", func() bool { s, _ := last(a); return s == "success" })

	st := control(rs[0], "/api/v1/policy/suspend", apiv1.PolicyControlRequest{Reason: "freeze"})
	if st.Suspended == nil || st.Suspended.Reason != "freeze" || st.Suspended.By == "" {
		t.Fatalf("suspend: %+v", st.Suspended)
	}
	b := repo.Commit(map[string]string{"policy/policy.cue": servertest.DefaultPolicy + "// b\n"}, "b")
	repo.Push()
	st = sync(rs[1])
	if st.Active.Revision != a || st.Waiting == nil || st.Waiting.Revision != b || st.Conditions[0].Reason != "Suspended" {
		t.Fatalf("replica-2 while suspended: active %s waiting %+v ready %+v", st.Active.Revision, st.Waiting, st.Conditions[0])
	}
	eventually(t, "b pending while suspended", func() bool { s, _ := last(b); return s == "pending" })

	st = control(rs[1], "/api/v1/policy/resume", nil)
	if st.Active.Revision != b {
		t.Fatalf("resume on replica-2: active %s, want %s", st.Active.Revision, b)
	}
	if st = sync(rs[0]); st.Active.Revision != b {
		t.Errorf("replica-1 after resume: active %s, want %s", st.Active.Revision, b)
	}
	eventually(t, "b success", func() bool { s, _ := last(b); return s == "success" })
	for _, sha := range []string{a, b} {
		if _, flipped := last(sha); flipped {
			t.Errorf("a replica posted pending for %s after success: %+v", sha, forge.Statuses())
		}
	}

	st = control(rs[0], "/api/v1/policy/pin", apiv1.PolicyControlRequest{Revision: a, Reason: "rollback"})
	if st.Active.Revision != a || st.Pinned == nil {
		t.Fatalf("pin on replica-1: %+v", st)
	}
	if st = sync(rs[1]); st.Active.Revision != a || st.Pinned == nil || st.Pinned.Revision != a {
		t.Errorf("replica-2 after the pin: active %s pinned %+v", st.Active.Revision, st.Pinned)
	}
	code, body := rs[1].Do(t, "POST", "/api/v1/policy/pin", apiv1.PolicyControlRequest{Revision: strings.Repeat("0", 40)}, true)
	if code != http.StatusNotFound || !strings.Contains(servertest.ErrorOf(body), "was never applied") {
		t.Errorf("pin of an unknown revision: HTTP %d %s", code, body)
	}
	st = control(rs[1], "/api/v1/policy/unpin", nil)
	if st.Active.Revision != b || st.Pinned != nil {
		t.Errorf("unpin: active %s pinned %+v", st.Active.Revision, st.Pinned)
	}
}
