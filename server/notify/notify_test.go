package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/delivery"
	"github.com/vigo-enroll/vigo/server/policyctl"
)

// hook is a receiver on loopback that checks signatures and can fail.
type hook struct {
	t      *testing.T
	secret []byte
	failN  int // the first failN requests get a 500
	mu     sync.Mutex
	got    []*http.Request
	bodies [][]byte
	seen   chan struct{}
}

func newHook(t *testing.T, secret string, failN int) (*hook, *httptest.Server) {
	h := &hook{t: t, secret: []byte(secret), failN: failN, seen: make(chan struct{}, 64)}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.got = append(h.got, r)
	h.bodies = append(h.bodies, body)
	n := len(h.got)
	h.mu.Unlock()
	defer func() { h.seen <- struct{}{} }()
	if len(h.secret) > 0 && !Verify(h.secret, r.Header.Get("X-Vigo-Timestamp"), body, r.Header.Get("X-Vigo-Signature")) {
		h.t.Errorf("bad signature %q", r.Header.Get("X-Vigo-Signature"))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if n <= h.failN {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *hook) wait(n int) {
	h.t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-h.seen:
		case <-time.After(20 * time.Second):
			h.t.Fatalf("only %d of %d requests arrived", i, n)
		}
	}
}

func start(t *testing.T, cfg Config) (*Notifier, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Millisecond
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return n, reg
}

var refused = policyctl.Event{Type: policyctl.EventRefused, Replica: "vigo-1", Revision: "abc", Name: "main@sha1:abc", Subject: "add web",
	Kind: "invalid", Errors: []apiv1.PolicyError{{File: "approved.cue", Line: 3, Col: 2, Path: "approved[0]", Message: "bad"}}}

// TestWebhookSignedAndRetried: the first two deliveries are answered 500;
// the third succeeds, with the same id and a valid signature each time.
func TestWebhookSignedAndRetried(t *testing.T) {
	t.Parallel()
	const secret = "0123456789abcdef-secret"
	h, srv := newHook(t, secret, 2)
	n, reg := start(t, Config{Receivers: []Receiver{{Name: "siem", Kind: "webhook", URL: srv.URL, Secret: []byte(secret)}}})
	n.Policy(refused)
	h.wait(3)
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.got[0].Header.Get("X-Vigo-Delivery")
	for i, r := range h.got {
		if r.Header.Get("X-Vigo-Event") != "refused" || r.Header.Get("X-Vigo-Delivery") != id || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("request %d headers %v", i, r.Header)
		}
	}
	var p Payload
	if err := json.Unmarshal(h.bodies[2], &p); err != nil {
		t.Fatal(err)
	}
	if p.ID != id || p.Type != policyctl.EventRefused || p.Revision != "abc" || len(p.Errors) != 1 ||
		p.Text != `vigo vigo-1 refused policy revision main@sha1:abc ("add web") (invalid): approved.cue:3:2: approved[0]: bad; the last good revision stays active` {
		t.Errorf("payload = %+v", p)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count(n.sent.WithLabelValues("siem", "delivered")) != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if v := count(n.sent.WithLabelValues("siem", "delivered")); v != 1 {
		t.Errorf("delivered = %v", v)
	}
	_ = reg
}

// TestSlackAndFilters: a Slack receiver gets {"text"}; event filters hold;
// an applied revision that revoked envoys sends "revoked" too.
func TestSlackAndFilters(t *testing.T) {
	t.Parallel()
	h, srv := newHook(t, "", 0)
	n, _ := start(t, Config{Receivers: []Receiver{{Name: "chat", Kind: "slack", URL: srv.URL, Events: []string{"revoked", "source_failed"}}}})
	n.Policy(refused) // filtered out
	n.Policy(policyctl.Event{Type: policyctl.EventApplied, Replica: "vigo-1", Name: "main@sha1:def", RevokedCount: 2,
		Revoked: []string{"db1.example.com (u1)", "db2.example.com (u2)"}})
	n.Policy(policyctl.Event{Type: policyctl.EventSourceFailed, Replica: "vigo-1", Source: "https://git.example.com/p.git#main", Reason: "ref not found"})
	h.wait(2)
	h.mu.Lock()
	defer h.mu.Unlock()
	var texts []string
	for _, b := range h.bodies {
		var m map[string]string
		if err := json.Unmarshal(b, &m); err != nil || len(m) != 1 {
			t.Fatalf("slack body %s: %v", b, err)
		}
		texts = append(texts, m["text"])
	}
	want := []string{
		"vigo vigo-1: policy revision main@sha1:def revoked 2 envoys: db1.example.com (u1), db2.example.com (u2)",
		"vigo vigo-1 cannot fetch the policy source https://git.example.com/p.git#main: ref not found",
	}
	if strings.Join(texts, "\n") != strings.Join(want, "\n") {
		t.Errorf("texts = %q, want %q", texts, want)
	}
}

// TestQueueFullDrops: a receiver that never answers in time does not
// block the caller; what does not fit is dropped and counted.
func TestQueueFullDrops(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	t.Cleanup(func() { close(block); srv.Close() })
	n, _ := start(t, Config{Limits: delivery.Limits{QueueSize: 2}, Receivers: []Receiver{{Name: "slow", Kind: "slack", URL: srv.URL}}})
	for range 10 {
		n.Policy(refused) // must return at once
	}
	if v := count(n.sent.WithLabelValues("slow", "dropped")); v < 7 {
		t.Errorf("dropped = %v, want at least 7 of 10 with a queue of 2", v)
	}
}

func TestRefusalThreshold(t *testing.T) {
	t.Parallel()
	h, srv := newHook(t, "0123456789abcdef", 0)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	n, _ := start(t, Config{Now: clock, Refusals: Threshold{Count: 3, Window: time.Minute},
		Receivers: []Receiver{{Name: "h", Kind: "webhook", URL: srv.URL, Secret: []byte("0123456789abcdef")}}})
	for _, r := range []string{"token is not valid", "not in approved", "token is not valid", "token is not valid", "x"} {
		n.Refused(r, "vigo-1") // the third crosses; the rest are the same burst
		advance(time.Second)
	}
	h.wait(1)
	advance(2 * time.Minute) // a quiet window
	for range 3 {
		n.Refused("again", "vigo-1")
	}
	h.wait(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.bodies) != 2 {
		t.Fatalf("%d deliveries, want 2", len(h.bodies))
	}
	var p Payload
	if err := json.Unmarshal(h.bodies[0], &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != TypeRefusals || p.Refusals.Count != 3 || p.Refusals.Top[0] != (ReasonCount{"token is not valid", 2}) {
		t.Errorf("refusals payload = %+v", p.Refusals)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	for _, r := range []Receiver{
		{Name: "", Kind: "slack", URL: "https://x"},
		{Name: "a", Kind: "email", URL: "https://x"},
		{Name: "a", Kind: "slack", URL: "ftp://x"},
		{Name: "a", Kind: "webhook", URL: "https://x", Secret: []byte("short")},
		{Name: "a", Kind: "slack", URL: "https://x", Events: []string{"nope"}},
	} {
		if _, err := New(Config{Receivers: []Receiver{r}}); err == nil {
			t.Errorf("New(%+v) succeeded", r)
		}
	}
}

func count(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
