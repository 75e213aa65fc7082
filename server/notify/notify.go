// Package notify delivers what happens to the policy and to enrollment to
// receivers outside the server: a generic JSON webhook signed with
// HMAC-SHA256, and Slack-compatible incoming webhooks (which Mattermost,
// Rocket.Chat and Teams' Slack connector accept too).
//
// Delivery never blocks the caller: each receiver has a bounded queue and
// one sender that retries with exponential backoff; when a queue is full,
// the event is dropped and counted. Metrics: vigo_notifications_total
// {receiver, result="delivered|failed|dropped"}.
//
// The webhook body is the JSON of Payload. Its headers:
//
//	Content-Type:     application/json
//	X-Vigo-Event:     the event type (applied, refused, …)
//	X-Vigo-Delivery:  a unique id of the event (the same on every retry)
//	X-Vigo-Timestamp: the Unix time of the first attempt
//	X-Vigo-Signature: sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>
//
// A receiver verifies the signature with the shared secret, in constant
// time, and may refuse timestamps older than a few minutes (replays).
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigo-enroll/vigo/server/delivery"
	"github.com/vigo-enroll/vigo/server/policyctl"
)

// Event types that are not policy controller events.
const (
	// TypeRevoked is sent beside "applied" when the revision revoked envoys.
	TypeRevoked = "revoked"
	// TypeRefusals is sent when enrollment refusals exceed the threshold.
	TypeRefusals = "refusals"
)

// Types lists every event type a receiver can ask for.
var Types = []string{
	string(policyctl.EventApplied), string(policyctl.EventRefused), string(policyctl.EventWaiting),
	string(policyctl.EventSourceFailed), string(policyctl.EventSourceRecovered),
	string(policyctl.EventSuspended), string(policyctl.EventResumed), string(policyctl.EventPinned), string(policyctl.EventUnpinned),
	TypeRevoked, TypeRefusals,
}

// Receiver is one destination.
type Receiver struct {
	// Name identifies the receiver in logs and metrics.
	Name string
	// Kind is "webhook" (the JSON Payload, signed) or "slack" (a text message).
	Kind string
	// URL receives the POST requests.
	URL string
	// Secret signs webhook deliveries (required for "webhook").
	Secret []byte
	// Events are the types delivered; empty means the default: every
	// type but "evaluating".
	Events []string
}

// Config configures a Notifier.
type Config struct {
	Receivers []Receiver
	// Limits bound the events waiting per receiver and the deliveries of
	// one event.
	delivery.Limits
	// Refusals, when Count > 0, sends one "refusals" event when at least
	// Count registrations are refused within Window, then again only after
	// a quiet Window.
	Refusals Threshold
	// Client sends the requests (default: a client with a 10 s timeout).
	Client *http.Client
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now returns the time (default time.Now).
	Now func() time.Time
}

// Threshold is a number of events within a window.
type Threshold struct {
	Count  int
	Window time.Duration
}

// Payload is what a webhook receives.
type Payload struct {
	// ID identifies the event; retries carry the same.
	ID string `json:"id"`
	// Text is a one-line summary, as sent to Slack.
	Text string `json:"text"`
	policyctl.Event
	// Refusals is set for a "refusals" event.
	Refusals *Refusals `json:"refusals,omitempty"`
}

// Refusals describes a burst of refused registrations.
type Refusals struct {
	Count  int           `json:"count"`
	Window time.Duration `json:"window_ns"`
	// Top are the most frequent reasons, most frequent first, with counts.
	Top []ReasonCount `json:"top"`
}

// ReasonCount is a refusal reason and how often it was seen.
type ReasonCount struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// Notifier delivers events to receivers.
type Notifier struct {
	cfg       Config
	log       *slog.Logger
	receivers []*receiver
	sent      *prometheus.CounterVec

	mu       sync.Mutex
	refusals []refusal // within the window
	alerted  bool      // a refusals event was sent and the burst is not over
}

type refusal struct {
	at     time.Time
	reason string
}

type receiver struct {
	Receiver
	queue chan message
}

type message struct {
	typ  string
	id   string
	body []byte
	text string
}

// New checks cfg and returns a Notifier; Run delivers.
func New(cfg Config) (*Notifier, error) {
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{cfg: cfg, log: cfg.Logger.With("component", "notify"),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigo_notifications_total",
			Help: "Notifications by receiver and result: delivered, failed (after every retry), dropped (queue full).",
		}, []string{"receiver", "result"})}
	names := map[string]bool{}
	for _, r := range cfg.Receivers {
		switch {
		case r.Name == "" || names[r.Name]:
			return nil, fmt.Errorf("notifications: each receiver needs a unique name (%q)", r.Name)
		case r.Kind != "webhook" && r.Kind != "slack":
			return nil, fmt.Errorf("notifications: receiver %s: kind %q must be webhook or slack", r.Name, r.Kind)
		case !strings.HasPrefix(r.URL, "https://") && !strings.HasPrefix(r.URL, "http://"):
			return nil, fmt.Errorf("notifications: receiver %s: the URL must be http(s)", r.Name)
		case r.Kind == "webhook" && len(r.Secret) < 16:
			return nil, fmt.Errorf("notifications: receiver %s: a webhook needs a secret of at least 16 characters", r.Name)
		}
		for _, e := range r.Events {
			if !slices.Contains(Types, e) && e != string(policyctl.EventEvaluating) {
				return nil, fmt.Errorf("notifications: receiver %s: unknown event %q (known: %s)", r.Name, e, strings.Join(Types, ", "))
			}
		}
		names[r.Name] = true
		n.receivers = append(n.receivers, &receiver{Receiver: r, queue: make(chan message, cfg.QueueSize)})
		for _, res := range []string{"delivered", "failed", "dropped"} {
			n.sent.WithLabelValues(r.Name, res)
		}
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(n.sent); err != nil {
			return nil, fmt.Errorf("register notification metrics: %w", err)
		}
	}
	return n, nil
}

// Run delivers queued events until ctx is done.
func (n *Notifier) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, r := range n.receivers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.deliverAll(ctx, r)
		}()
	}
	wg.Wait()
	return nil
}

// Policy queues a policy controller event (and a "revoked" event beside an
// applied revision that revoked envoys). It never blocks.
func (n *Notifier) Policy(e policyctl.Event) {
	n.send(Payload{Text: text(e), Event: e})
	if e.Type == policyctl.EventApplied && e.RevokedCount > 0 {
		r := e
		r.Type = TypeRevoked
		n.send(Payload{Text: text(r), Event: r})
	}
}

// Refused counts a refused registration and queues a "refusals" event
// when the threshold is crossed. It never blocks.
func (n *Notifier) Refused(reason, replica string) {
	th := n.cfg.Refusals
	if th.Count <= 0 {
		return
	}
	now := n.cfg.Now()
	n.mu.Lock()
	cut := now.Add(-th.Window)
	kept := n.refusals[:0]
	for _, r := range n.refusals {
		if r.at.After(cut) {
			kept = append(kept, r)
		}
	}
	n.refusals = kept
	if len(n.refusals) == 0 {
		n.alerted = false // a quiet window: the burst is over
	}
	if len(n.refusals) < 10*th.Count { // bounded memory
		n.refusals = append(n.refusals, refusal{now, reason})
	}
	fire := !n.alerted && len(n.refusals) >= th.Count
	var rf *Refusals
	if fire {
		n.alerted = true
		rf = &Refusals{Count: len(n.refusals), Window: th.Window, Top: topReasons(n.refusals, 5)}
	}
	n.mu.Unlock()
	if fire {
		e := policyctl.Event{Type: TypeRefusals, At: now, Replica: replica}
		p := Payload{Event: e, Refusals: rf}
		p.Text = fmt.Sprintf("vigo %s: %d registrations refused within %s; most: %s", replica, rf.Count, th.Window, rf.Top[0].Reason)
		n.send(p)
	}
}

func topReasons(rs []refusal, k int) []ReasonCount {
	counts := map[string]int{}
	for _, r := range rs {
		counts[r.reason]++
	}
	var out []ReasonCount
	for reason, c := range counts {
		out = append(out, ReasonCount{reason, c})
	}
	slices.SortFunc(out, func(a, b ReasonCount) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	if len(out) > k {
		out = out[:k]
	}
	return out
}

func (n *Notifier) send(p Payload) {
	typ := string(p.Type)
	p.ID = newID()
	body, err := json.Marshal(p)
	if err != nil {
		n.log.Error("encode notification", "err", err)
		return
	}
	for _, r := range n.receivers {
		if !r.wants(typ) {
			continue
		}
		select {
		case r.queue <- message{typ: typ, id: p.ID, body: body, text: p.Text}:
		default:
			n.sent.WithLabelValues(r.Name, "dropped").Inc()
			n.log.Warn("notification dropped: the receiver's queue is full", "receiver", r.Name, "event", typ)
		}
	}
}

func (r *receiver) wants(typ string) bool {
	if len(r.Events) == 0 {
		return typ != string(policyctl.EventEvaluating)
	}
	return slices.Contains(r.Events, typ)
}

func (n *Notifier) deliverAll(ctx context.Context, r *receiver) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-r.queue:
			n.deliver(ctx, r, d)
		}
	}
}

// deliver sends d to r, retrying network errors, 429 and 5xx answers.
func (n *Notifier) deliver(ctx context.Context, r *receiver, d message) {
	ts := strconv.FormatInt(n.cfg.Now().Unix(), 10)
	err := delivery.Retry(ctx, n.cfg.MaxAttempts, n.cfg.Backoff, func(ctx context.Context) (bool, error) { return n.post(ctx, r, d, ts) },
		func(attempt int, err error) {
			n.log.Debug("notification failed, retrying", "receiver", r.Name, "event", d.typ, "attempt", attempt, "err", err)
		})
	switch {
	case err == nil:
		n.sent.WithLabelValues(r.Name, "delivered").Inc()
	case ctx.Err() == nil:
		n.sent.WithLabelValues(r.Name, "failed").Inc()
		n.log.Warn("notification not delivered", "receiver", r.Name, "event", d.typ, "err", err)
	}
}

func (n *Notifier) post(ctx context.Context, r *receiver, d message, ts string) (retry bool, err error) {
	body := d.body
	if r.Kind == "slack" {
		body, _ = json.Marshal(map[string]string{"text": d.text})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "vigo-enroll")
	if r.Kind == "webhook" {
		req.Header.Set("X-Vigo-Event", d.typ)
		req.Header.Set("X-Vigo-Delivery", d.id)
		req.Header.Set("X-Vigo-Timestamp", ts)
		req.Header.Set("X-Vigo-Signature", Sign(r.Secret, ts, body))
	}
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		return true, redactURL(err, r.URL)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return delivery.Result(resp.StatusCode, "")
}

// redactURL removes the receiver's URL from an error: Slack and similar
// webhook URLs are secrets.
func redactURL(err error, url string) error {
	msg := strings.ReplaceAll(err.Error(), url, "<receiver URL>")
	if i := strings.Index(url, "?"); i > 0 {
		msg = strings.ReplaceAll(msg, url[:i], "<receiver URL>")
	}
	return errors.New(msg)
}

// Sign returns the X-Vigo-Signature of a webhook delivery.
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a webhook delivery's signature in constant time, for
// receivers written in Go.
func Verify(secret []byte, timestamp string, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, timestamp, body)), []byte(signature))
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// text is the one-line summary of an event.
func text(e policyctl.Event) string {
	rev := e.Name
	if rev == "" {
		rev = e.Revision
	}
	if e.Subject != "" {
		rev += fmt.Sprintf(" (%q)", e.Subject)
	}
	who := "vigo " + e.Replica
	switch e.Type {
	case policyctl.EventApplied:
		return fmt.Sprintf("%s applied policy revision %s", who, rev)
	case TypeRevoked:
		return fmt.Sprintf("%s: policy revision %s revoked %d envoys: %s", who, rev, e.RevokedCount, strings.Join(e.Revoked, ", "))
	case policyctl.EventRefused:
		first := ""
		if len(e.Errors) > 0 {
			pe := e.Errors[0]
			msg := pe.Message
			if pe.Path != "" {
				msg = pe.Path + ": " + msg
			}
			first = ": " + msg
			if pe.File != "" {
				loc := pe.File
				if pe.Line > 0 {
					loc = fmt.Sprintf("%s:%d:%d", pe.File, pe.Line, pe.Col)
				}
				first = ": " + loc + ": " + msg
			}
		}
		return fmt.Sprintf("%s refused policy revision %s (%s)%s; the last good revision stays active", who, rev, e.Kind, first)
	case policyctl.EventWaiting:
		return fmt.Sprintf("%s: policy revision %s is valid and waits (applying is suspended or a revision is pinned)", who, rev)
	case policyctl.EventSourceFailed:
		return fmt.Sprintf("%s cannot fetch the policy source %s: %s", who, e.Source, e.Reason)
	case policyctl.EventSourceRecovered:
		return fmt.Sprintf("%s fetches the policy source %s again", who, e.Source)
	case policyctl.EventSuspended:
		return fmt.Sprintf("%s: %s suspended applying policy: %s", who, e.Actor, e.Reason)
	case policyctl.EventResumed:
		return fmt.Sprintf("%s: %s resumed applying policy", who, e.Actor)
	case policyctl.EventPinned:
		return fmt.Sprintf("%s: %s pinned policy revision %s: %s", who, e.Actor, e.Revision, e.Reason)
	case policyctl.EventUnpinned:
		return fmt.Sprintf("%s: %s unpinned the policy", who, e.Actor)
	case policyctl.EventEvaluating:
		return fmt.Sprintf("%s is evaluating policy revision %s", who, rev)
	}
	return fmt.Sprintf("%s: %s %s", who, e.Type, rev)
}
