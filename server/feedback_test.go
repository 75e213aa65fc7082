package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/feedback/feedbacktest"
	"github.com/vigo-enroll/vigo/server/notify"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// receiver is a notification webhook on loopback: it checks the HMAC of
// each delivery and answers the first two with 500.
type receiver struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	calls  int
	events []notify.Payload
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if !notify.Verify(r.secret, req.Header.Get("X-Vigo-Timestamp"), body, req.Header.Get("X-Vigo-Signature")) {
		r.t.Errorf("notification with a bad signature")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls <= 2 {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var p notify.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		r.t.Errorf("notification body: %v", err)
	}
	r.events = append(r.events, p)
}

func (r *receiver) got(typ, revision string) *notify.Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range r.events {
		if string(p.Type) == typ && p.Revision == revision {
			return &r.events[i]
		}
	}
	return nil
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGitOpsFeedbackLoop is the "done when": a bad commit pushed to
// the repository the server follows shows "failure" with its file:line on
// the forge, a signed notification "refused" reaches the receiver (after
// two failed deliveries), and the status says Ready=False with the reason;
// the fix shows "success" and Ready=True.
func TestGitOpsFeedbackLoop(t *testing.T) {
	repo := gitsynctest.NewRepo(t)
	first := repo.Commit(map[string]string{"policy/policy.cue": servertest.DefaultPolicy}, "initial policy")
	repo.Push()
	forge := feedbacktest.New(t, "forge-token")
	secrets := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(secrets, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const hookSecret = "notification-secret-0123456789"
	rcv := &receiver{t: t, secret: []byte(hookSecret)}
	hook := httptest.NewServer(rcv)
	t.Cleanup(hook.Close)

	in := servertest.Start(t, servertest.Options{Config: func(c *server.Config) {
		c.Policy.Dir = ""
		c.Policy.Git = &server.GitConfig{URL: repo.URL(), Path: "policy", Interval: server.Duration(time.Hour)}
		c.Policy.Feedback = &server.FeedbackConfig{Kind: "github", APIURL: forge.APIURL("github"),
			Repository: "example/enrollment-policy", TokenFile: write("forge-token", "forge-token\n")}
		c.Notifications.Receivers = []server.ReceiverConfig{{Name: "ops", Kind: "webhook", URL: hook.URL,
			SecretFile: write("hook-secret", hookSecret), Events: []string{"applied", "refused"}}}
	}})
	status := func() apiv1.PolicyStatus {
		code, body := in.Do(t, "POST", "/api/v1/policy/sync", nil, true)
		if code != http.StatusOK {
			t.Fatalf("sync: HTTP %d %s", code, body)
		}
		return decode[apiv1.PolicySyncResult](t, body).Status
	}
	forgeState := func(sha string) string {
		state := ""
		for _, s := range forge.Statuses() {
			if s.SHA == sha {
				state = s.State + " " + s.Description
			}
		}
		return state
	}
	eventually(t, "success on the first commit", func() bool { return forgeState(first) == "success applied by test" })

	bad := repo.Commit(map[string]string{"policy/policy.cue": "package policy\n\napprovd: [\"*.web.example.com\"]\n"}, "typo")
	repo.Push()
	st := status()
	ready := st.Conditions[0]
	if ready.Type != "Ready" || ready.Status != "False" || ready.Reason != "ValidationFailed" ||
		!strings.Contains(ready.Message, "policy.cue:3:1: approvd: field not allowed") || !strings.Contains(ready.Message, "main@sha1:"+bad) {
		t.Errorf("Ready after the bad commit = %+v", ready)
	}
	eventually(t, "failure on the bad commit", func() bool {
		return strings.HasPrefix(forgeState(bad), "failure refused by test: policy.cue:3: approvd: field not allowed")
	})
	eventually(t, "the refused notification", func() bool { return rcv.got("refused", bad) != nil })
	if p := rcv.got("refused", bad); p.Errors[0].File != "policy.cue" || p.Errors[0].Line != 3 || p.Name != "main@sha1:"+bad || p.Subject != "typo" {
		t.Errorf("refused notification = %+v", p)
	}

	fix := repo.Commit(map[string]string{"policy/policy.cue": servertest.DefaultPolicy + "// fixed\n"}, "fix the typo")
	repo.Push()
	st = status()
	if r := st.Conditions[0]; r.Status != "True" || r.Reason != "Succeeded" || !st.Healthy {
		t.Errorf("Ready after the fix = %+v", r)
	}
	eventually(t, "success on the fix", func() bool { return forgeState(fix) == "success applied by test" })
	eventually(t, "the applied notification", func() bool { return rcv.got("applied", fix) != nil })
}
