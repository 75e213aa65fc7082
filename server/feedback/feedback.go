// Package feedback posts the server's verdict on each policy revision as a
// commit status on the forge that hosts the policy repository, so that the
// author sees on the commit (and on the merged pull request) whether it was
// applied: "pending" while it is evaluated, "success" when applied, and a
// failure with the first errors (file:line) when refused.
//
// Forges: GitHub (POST /repos/{owner}/{repo}/statuses/{sha}, JSON, token
// as "Authorization: Bearer"), GitLab (POST /projects/{id}/statuses/{sha},
// the project's path URL-encoded as id, token in "PRIVATE-TOKEN"), Gitea and
// Forgejo (POST /repos/{owner}/{repo}/statuses/{sha}, JSON, "Authorization:
// token"). Posting never blocks a sync: statuses wait in a bounded queue and
// are retried with backoff; failures are logged and counted
// (vigo_commit_statuses_total{result}).
//
// Several replicas post under one context: the description names the
// replica, and a replica does not post "pending" for a revision another
// replica has already applied, so a status is not flipped back.
package feedback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigo-enroll/vigo/server/delivery"
	"github.com/vigo-enroll/vigo/server/policyctl"
)

// Forge kinds.
const (
	GitHub = "github"
	GitLab = "gitlab"
	Gitea  = "gitea" // and Forgejo
)

// DefaultContext is the status context when Config.Context is empty.
const DefaultContext = "vigo/policy"

// Config configures a Poster.
type Config struct {
	// Kind is GitHub, GitLab or Gitea.
	Kind string
	// APIURL is the forge's API root: https://api.github.com (default for
	// GitHub), https://gitlab.com/api/v4 (default for GitLab), or
	// https://gitea.example.com/api/v1 (required for Gitea).
	APIURL string
	// Repository is "owner/repo" (GitHub, Gitea) or the project's path
	// "group/sub/project" (GitLab).
	Repository string
	// Token authenticates; it is never logged.
	Token string
	// Context names the status (DefaultContext when empty).
	Context string
	// TargetURL, when set, is linked from the status.
	TargetURL string
	// Replica is named in every description.
	Replica string
	// AppliedElsewhere reports whether another replica already applied a
	// revision (then "pending" is not posted for it); nil means never.
	AppliedElsewhere func(revision string) bool
	// Limits bound the statuses waiting to be posted and the posts of
	// one status.
	delivery.Limits
	Client     *http.Client
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Poster posts commit statuses.
type Poster struct {
	cfg   Config
	log   *slog.Logger
	queue chan status
	count *prometheus.CounterVec
}

// status is one commit status to post. State is the forge-neutral state:
// "pending", "success" or "failure".
type status struct {
	sha, state, description string
}

var sha1RE = regexp.MustCompile(`^[0-9a-f]{40}$|^[0-9a-f]{64}$`)

// New checks cfg and returns a Poster; Run posts.
func New(cfg Config) (*Poster, error) {
	switch cfg.Kind {
	case GitHub:
		if cfg.APIURL == "" {
			cfg.APIURL = "https://api.github.com"
		}
	case GitLab:
		if cfg.APIURL == "" {
			cfg.APIURL = "https://gitlab.com/api/v4"
		}
	case Gitea:
		if cfg.APIURL == "" {
			return nil, errors.New("policy.feedback.api_url is required for gitea (such as https://gitea.example.com/api/v1)")
		}
	default:
		return nil, fmt.Errorf("policy.feedback.kind %q: must be github, gitlab or gitea", cfg.Kind)
	}
	u, err := url.Parse(cfg.APIURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("policy.feedback.api_url %q: not an http(s) URL", cfg.APIURL)
	}
	cfg.APIURL = strings.TrimSuffix(cfg.APIURL, "/")
	parts := strings.Split(cfg.Repository, "/")
	if len(parts) < 2 || (cfg.Kind != GitLab && len(parts) != 2) || strings.Contains(cfg.Repository, "..") {
		return nil, fmt.Errorf("policy.feedback.repository %q: write owner/repo (GitLab: the project's path)", cfg.Repository)
	}
	for _, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("policy.feedback.repository %q: empty part", cfg.Repository)
		}
	}
	if cfg.Token == "" {
		return nil, errors.New("policy.feedback: a token is required (token_file)")
	}
	if cfg.Context == "" {
		cfg.Context = DefaultContext
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 15 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Poster{cfg: cfg, log: cfg.Logger.With("component", "feedback"), queue: make(chan status, cfg.QueueSize),
		count: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigo_commit_statuses_total",
			Help: "Commit statuses posted to the forge, by result: posted, failed (after every retry), dropped (queue full).",
		}, []string{"result"})}
	for _, r := range []string{"posted", "failed", "dropped"} {
		p.count.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(p.count); err != nil {
			return nil, fmt.Errorf("register commit status metrics: %w", err)
		}
	}
	return p, nil
}

// Handle queues the status an event calls for; it never blocks. Events
// about revisions that are not commits (a local folder) are ignored.
func (p *Poster) Handle(e policyctl.Event) {
	if !sha1RE.MatchString(e.Revision) {
		return
	}
	who := p.cfg.Replica
	var s status
	switch e.Type {
	case policyctl.EventEvaluating:
		if p.cfg.AppliedElsewhere != nil && p.cfg.AppliedElsewhere(e.Revision) {
			return
		}
		s = status{state: "pending", description: "evaluating on " + who}
	case policyctl.EventApplied:
		s = status{state: "success", description: "applied by " + who}
	case policyctl.EventWaiting:
		s = status{state: "pending", description: "valid; waits on " + who + " (applying is suspended or a revision is pinned)"}
	case policyctl.EventRefused:
		d := "refused by " + who
		if len(e.Errors) > 0 {
			pe := e.Errors[0]
			loc := pe.File
			if pe.Line > 0 {
				loc = fmt.Sprintf("%s:%d", pe.File, pe.Line)
			}
			if loc != "" {
				loc += ": "
			}
			if pe.Path != "" {
				loc += pe.Path + ": "
			}
			d += ": " + loc + pe.Message
		}
		s = status{state: "failure", description: d}
	default:
		return
	}
	s.sha = e.Revision
	// GitHub refuses descriptions over 140 characters.
	if r := []rune(s.description); len(r) > 140 {
		s.description = string(r[:139]) + "…"
	}
	select {
	case p.queue <- s:
	default:
		p.count.WithLabelValues("dropped").Inc()
		p.log.Warn("commit status dropped: the queue is full", "revision", s.sha, "state", s.state)
	}
}

// Run posts queued statuses until ctx is done.
func (p *Poster) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-p.queue:
			p.post(ctx, s)
		}
	}
}

func (p *Poster) post(ctx context.Context, s status) {
	err := delivery.Retry(ctx, p.cfg.MaxAttempts, p.cfg.Backoff, func(ctx context.Context) (bool, error) { return p.send(ctx, s) }, nil)
	switch {
	case err == nil:
		p.count.WithLabelValues("posted").Inc()
		p.log.Debug("commit status posted", "revision", s.sha, "state", s.state)
	case ctx.Err() == nil:
		p.count.WithLabelValues("failed").Inc()
		p.log.Warn("commit status not posted", "revision", s.sha, "state", s.state, "err", err)
	}
}

// send posts s once in the forge's dialect.
func (p *Poster) send(ctx context.Context, s status) (retry bool, err error) {
	c := p.cfg
	var endpoint string
	var body []byte
	header := http.Header{"Content-Type": {"application/json"}, "User-Agent": {"vigo-enroll"}}
	switch c.Kind {
	case GitHub:
		endpoint = fmt.Sprintf("%s/repos/%s/statuses/%s", c.APIURL, c.Repository, s.sha)
		body, _ = json.Marshal(map[string]string{"state": s.state, "description": s.description, "context": c.Context, "target_url": c.TargetURL})
		header.Set("Accept", "application/vnd.github+json")
		header.Set("X-GitHub-Api-Version", "2022-11-28")
		header.Set("Authorization", "Bearer "+c.Token)
	case GitLab:
		state := map[string]string{"pending": "running", "success": "success", "failure": "failed"}[s.state]
		endpoint = fmt.Sprintf("%s/projects/%s/statuses/%s", c.APIURL, url.PathEscape(c.Repository), s.sha)
		m := map[string]string{"state": state, "description": s.description, "name": c.Context}
		if c.TargetURL != "" {
			m["target_url"] = c.TargetURL
		}
		body, _ = json.Marshal(m)
		header.Set("PRIVATE-TOKEN", c.Token)
	case Gitea:
		endpoint = fmt.Sprintf("%s/repos/%s/statuses/%s", c.APIURL, c.Repository, s.sha)
		body, _ = json.Marshal(map[string]string{"state": s.state, "description": s.description, "context": c.Context, "target_url": c.TargetURL})
		header.Set("Authorization", "token "+c.Token)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header = header
	resp, err := c.Client.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return delivery.Result(resp.StatusCode, strings.TrimSpace(string(msg))+" (check the token's permission to write commit statuses)")
}

// RepositoryFromURL derives owner/repo (or a GitLab project path) from the
// policy repository's URL: https://host/owner/repo.git,
// ssh://git@host/owner/repo.git or git@host:owner/repo.git.
func RepositoryFromURL(raw string) string {
	p := raw
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		p = u.Path
	} else if _, rest, ok := strings.Cut(raw, ":"); ok && !strings.Contains(raw, "://") {
		p = rest
	}
	return strings.TrimSuffix(strings.Trim(p, "/"), ".git")
}
