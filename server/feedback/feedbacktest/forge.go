// Package feedbacktest is a fake forge on loopback that implements the
// commit status APIs of GitHub, GitLab and Gitea/Forgejo as documented
// (paths, authentication headers, JSON fields and state values), checks
// every request against them, and records the statuses.
package feedbacktest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Status is one status the forge accepted.
type Status struct {
	Kind, Repository, SHA, State, Context, Description, TargetURL string
}

// Forge is the fake forge.
type Forge struct {
	// URL is the API root for each kind: URL+"/github", URL+"/gitlab/api/v4",
	// URL+"/gitea/api/v1".
	URL   string
	token string
	t     testing.TB

	mu       sync.Mutex
	statuses []Status
	fail     int // answer the next fail requests with 503
}

// New starts a forge that accepts token.
func New(t testing.TB, token string) *Forge {
	f := &Forge{token: token, t: t}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// APIURL returns the API root the server should use for kind.
func (f *Forge) APIURL(kind string) string {
	switch kind {
	case "gitlab":
		return f.URL + "/gitlab/api/v4"
	case "gitea":
		return f.URL + "/gitea/api/v1"
	}
	return f.URL + "/github"
}

// Fail makes the next n requests fail with 503.
func (f *Forge) Fail(n int) {
	f.mu.Lock()
	f.fail = n
	f.mu.Unlock()
}

// Statuses returns what was accepted, in order.
func (f *Forge) Statuses() []Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.statuses)
}

var (
	ghPath    = regexp.MustCompile(`^/github/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})$`)
	giteaPath = regexp.MustCompile(`^/gitea/api/v1/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})$`)
	glPath    = regexp.MustCompile(`^/gitlab/api/v4/projects/([^/]+)/statuses/([0-9a-f]{40})$`)
)

func (f *Forge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bad := func(code int, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		f.t.Errorf("fake forge: %s %s: %s", r.Method, r.URL.EscapedPath(), msg)
		http.Error(w, msg, code)
	}
	f.mu.Lock()
	if f.fail > 0 {
		f.fail--
		f.mu.Unlock()
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	f.mu.Unlock()
	if r.Method != http.MethodPost {
		bad(http.StatusMethodNotAllowed, "only POST")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		bad(http.StatusBadRequest, "body is not a JSON object: %v", err)
		return
	}
	str := func(k string) string { s, _ := fields[k].(string); return s }
	path := r.URL.EscapedPath()
	var s Status
	var states []string
	switch {
	case ghPath.MatchString(path):
		m := ghPath.FindStringSubmatch(path)
		s = Status{Kind: "github", Repository: m[1], SHA: m[2], Context: str("context")}
		states = []string{"error", "failure", "pending", "success"}
		if a := r.Header.Get("Authorization"); a != "Bearer "+f.token && a != "token "+f.token {
			bad(http.StatusUnauthorized, "Authorization %q", a)
			return
		}
	case giteaPath.MatchString(path):
		m := giteaPath.FindStringSubmatch(path)
		s = Status{Kind: "gitea", Repository: m[1], SHA: m[2], Context: str("context")}
		states = []string{"pending", "success", "error", "failure", "warning"}
		if a := r.Header.Get("Authorization"); a != "token "+f.token && a != "Bearer "+f.token {
			bad(http.StatusUnauthorized, "Authorization %q", a)
			return
		}
	case glPath.MatchString(path):
		m := glPath.FindStringSubmatch(path)
		// The project path is one URL-encoded segment: group%2Fproject.
		repo := strings.ReplaceAll(m[1], "%2F", "/")
		s = Status{Kind: "gitlab", Repository: repo, SHA: m[2], Context: str("name")}
		states = []string{"pending", "running", "success", "failed", "canceled"}
		if a := r.Header.Get("PRIVATE-TOKEN"); a != f.token && r.Header.Get("Authorization") != "Bearer "+f.token {
			bad(http.StatusUnauthorized, "PRIVATE-TOKEN %q", a)
			return
		}
	default:
		bad(http.StatusNotFound, "no such API")
		return
	}
	s.State, s.Description, s.TargetURL = str("state"), str("description"), str("target_url")
	if !slices.Contains(states, s.State) {
		bad(http.StatusUnprocessableEntity, "state %q is not one of %v", s.State, states)
		return
	}
	if len([]rune(s.Description)) > 140 {
		bad(http.StatusUnprocessableEntity, "description longer than 140 characters")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		bad(http.StatusUnsupportedMediaType, "Content-Type %q", ct)
		return
	}
	f.mu.Lock()
	f.statuses = append(f.statuses, s)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(fields)
}
