// Package policyctl ties a gitsync.Source to the policy package: it fetches
// revisions, validates each new one with policy.Load, and swaps a valid one
// in atomically while an invalid one is rejected and the last good revision
// stays active. It persists the last good revision so that a restart serves
// it before the first sync, applies the policy's revocations to the store,
// audits every verdict and exports status and metrics.
package policyctl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/store"
)

// DefaultInterval is the poll interval when Config.Interval is zero.
const DefaultInterval = time.Minute

// maxVerdicts bounds the memory of remembered verdicts.
const maxVerdicts = 256

// Config configures a Controller.
type Config struct {
	// Source yields policy revisions. Required.
	Source gitsync.Source
	// Store persists the last good revision, revocations and audit events. Required.
	Store store.Store
	// Interval between polls (DefaultInterval when zero). A source that is
	// a gitsync.Notifier is also synced on each of its signals.
	Interval time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// Replica names this server in audit events and status.
	Replica string
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// OnApplied, when set, is called after each policy becomes active
	// (including a restored one), from the syncing goroutine.
	OnApplied func(*policy.Policy)
	// Registerer receives the controller's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Controller keeps the active policy. Its methods are safe for concurrent use.
type Controller struct {
	src       gitsync.Source
	st        store.Store
	interval  time.Duration
	log       *slog.Logger
	replica   string
	now       func() time.Time
	onApplied func(*policy.Policy)
	m         metrics

	active  atomic.Pointer[policy.Policy]
	trigger chan struct{}
	syncMu  sync.Mutex // one sync at a time

	mu         sync.Mutex // guards the fields below
	activeInfo *apiv1.PolicyActive
	attempted  *apiv1.PolicyAttempt
	lastFetch  time.Time
	nextPoll   time.Time
	fetchErr   string
	verdicts   map[string]*apiv1.PolicyAttempt // revision id -> verdict, once fully applied or rejected
}

type metrics struct {
	activeInfo     *prometheus.GaugeVec
	lastSync       prometheus.Gauge
	syncErrors     *prometheus.CounterVec
	attemptedValid prometheus.Gauge
}

// Kinds of vigo_policy_sync_errors_total.
const (
	kindFetch   = "fetch"   // the source could not be read
	kindVerify  = "verify"  // the head commit's signature was refused
	kindInvalid = "invalid" // the policy did not load
	kindStore   = "store"   // persisting, revoking or auditing failed
)

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		activeInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigo_policy_active_info",
			Help: "The active policy revision (value 1).",
		}, []string{"revision"}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigo_policy_last_sync_timestamp_seconds",
			Help: "Unix time of the last successful fetch of the policy source.",
		}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigo_policy_sync_errors_total",
			Help: "Policy sync failures by kind: fetch, verify, invalid, store.",
		}, []string{"kind"}),
		attemptedValid: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigo_policy_attempted_valid",
			Help: "1 when the last attempted policy revision was valid, else 0.",
		}),
	}
	for _, k := range []string{kindFetch, kindVerify, kindInvalid, kindStore} {
		m.syncErrors.WithLabelValues(k) // export zeros
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.activeInfo, m.lastSync, m.syncErrors, m.attemptedValid} {
			if err := reg.Register(c); err != nil {
				return m, fmt.Errorf("register policy metrics: %w", err)
			}
		}
	}
	return m, nil
}

// New returns a Controller. Call Restore, then Run.
func New(cfg Config) (*Controller, error) {
	if cfg.Source == nil {
		return nil, errors.New("new policy controller: no source")
	}
	if cfg.Store == nil {
		return nil, errors.New("new policy controller: no store")
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new policy controller: %w", err)
	}
	c := &Controller{
		src:       cfg.Source,
		st:        cfg.Store,
		interval:  cfg.Interval,
		log:       cfg.Logger,
		replica:   cfg.Replica,
		now:       cfg.Now,
		onApplied: cfg.OnApplied,
		m:         m,
		trigger:   make(chan struct{}, 1),
		verdicts:  map[string]*apiv1.PolicyAttempt{},
	}
	if c.interval <= 0 {
		c.interval = DefaultInterval
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "policyctl")
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Active returns the active policy, or nil when no valid revision has
// been applied or restored. The policy is immutable: callers may keep it.
func (c *Controller) Active() *policy.Policy { return c.active.Load() }

// Trigger asks Run for a sync as soon as possible, without waiting.
func (c *Controller) Trigger() {
	select {
	case c.trigger <- struct{}{}:
	default: // one is already pending
	}
}

// Restore activates the last good revision persisted in the store, so
// that a restarted server enrolls with it before its first sync. It
// returns nil when there is nothing to restore, and an error when the
// saved revision cannot be read or no longer loads (then nothing is active).
func (c *Controller) Restore(ctx context.Context) error {
	rec, err := c.st.LoadPolicyRevision(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore policy: %w", err)
	}
	fsys, err := gitsync.MapFS(rec.Files, rec.AppliedAt)
	if err != nil {
		return fmt.Errorf("restore policy %s: %w", rec.ID, err)
	}
	p, err := policy.Load(fsys, rec.ID)
	if err != nil {
		return fmt.Errorf("restore policy %s: %w", rec.ID, err)
	}
	c.activate(p, &apiv1.PolicyActive{Revision: rec.ID, AppliedAt: rec.AppliedAt, Signer: rec.Signer})
	c.log.Info("policy restored", "revision", rec.ID, "source", rec.Source)
	return nil
}

// Run syncs at once, then every Interval, on each signal of a Notifier
// source and on Trigger, until ctx is done. It returns nil then. Sync
// failures are logged and shown by Status; they do not stop Run.
func (c *Controller) Run(ctx context.Context) error {
	var notify <-chan struct{}
	if n, ok := c.src.(gitsync.Notifier); ok {
		notify = n.Changes()
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-notify:
		case <-c.trigger:
		}
		if _, err := c.SyncNow(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("policy sync failed", "err", err)
		}
		c.mu.Lock()
		c.nextPoll = c.now().Add(c.interval)
		c.mu.Unlock()
		timer.Reset(c.interval)
	}
}

// SyncNow fetches the source and applies a new revision, then returns the
// status. Concurrent calls run one after the other. The error is that of
// the fetch or of the store; an invalid revision is not an error (see
// Status().Attempted).
func (c *Controller) SyncNow(ctx context.Context) (apiv1.PolicyStatus, error) {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	err := c.sync(ctx)
	return c.Status(), err
}

func (c *Controller) sync(ctx context.Context) error {
	rev, _, err := c.src.Fetch(ctx)
	now := c.now()
	if err != nil {
		c.m.syncErrors.WithLabelValues(kindFetch).Inc()
		c.mu.Lock()
		c.fetchErr = err.Error()
		c.mu.Unlock()
		return fmt.Errorf("sync policy: %w", err)
	}
	c.m.lastSync.Set(float64(now.UnixNano()) / 1e9)
	c.mu.Lock()
	c.lastFetch, c.fetchErr = now, ""
	v, seen := c.verdicts[rev.ID]
	activeID := ""
	if c.activeInfo != nil {
		activeID = c.activeInfo.Revision
	}
	if seen && (!v.Valid || rev.ID == activeID) {
		// Already judged: a bad commit is not re-evaluated on every poll,
		// and the active one is not re-applied.
		c.attempted = v
		c.mu.Unlock()
		c.setAttemptedValid(v.Valid)
		return nil
	}
	c.mu.Unlock()
	return c.evaluate(ctx, rev, now)
}

// evaluate validates rev and applies or rejects it.
func (c *Controller) evaluate(ctx context.Context, rev gitsync.Revision, now time.Time) error {
	start := time.Now()
	attempt := &apiv1.PolicyAttempt{Revision: rev.ID, At: now, Valid: true, Errors: []apiv1.PolicyError{}}
	var p *policy.Policy
	kind := ""
	if rev.VerifyErr != nil {
		kind = kindVerify
		attempt.Errors = []apiv1.PolicyError{{Message: "commit signature: " + rev.VerifyErr.Error()}}
	} else {
		var err error
		p, err = policy.Load(rev.Files, rev.ID)
		if err == nil {
			// The policy's own tests state what its author meant: a
			// revision whose tests fail is refused here as by `policy vet`.
			var es policy.Errors
			for _, f := range p.RunTests() {
				es = append(es, f.Err())
			}
			if len(es) > 0 {
				err = es
			}
		}
		if err != nil {
			kind = kindInvalid
			attempt.Errors = policyErrors(err)
		}
	}
	if kind != "" {
		attempt.Valid = false
		return c.reject(ctx, rev, attempt, kind)
	}

	// Store side effects first: the revision is active only once its
	// revocations are in the store, so nobody sees the new revision while
	// an envoy it revokes can still check in. When a step fails the
	// previous policy stays active and the verdict is not remembered, so
	// the next sync applies the revision again (every step is idempotent).
	if err := c.persist(ctx, rev, p, now); err != nil {
		c.m.syncErrors.WithLabelValues(kindStore).Inc()
		return err
	}
	c.activate(p, &apiv1.PolicyActive{Revision: rev.ID, AppliedAt: now, Signer: rev.Signer})
	c.mu.Lock()
	c.attempted = attempt
	c.mu.Unlock()
	c.setAttemptedValid(true)
	c.log.Info("policy applied", "revision", rev.ID, "signer", rev.Signer, "author", rev.Author, "duration", time.Since(start))
	c.remember(attempt)
	return nil
}

func (c *Controller) persist(ctx context.Context, rev gitsync.Revision, p *policy.Policy, now time.Time) error {
	files, err := readFiles(rev.Files)
	if err != nil {
		return fmt.Errorf("persist policy %s: %w", rev.ID, err)
	}
	err = c.st.SavePolicyRevision(ctx, store.PolicyRevision{
		ID: rev.ID, Source: c.src.String(), Files: files, Signer: rev.Signer, AppliedAt: now,
	})
	if err != nil {
		return fmt.Errorf("persist policy %s: %w", rev.ID, err)
	}
	var rs []store.Revocation
	for _, r := range p.Revocations() {
		rs = append(rs, store.Revocation{UUID: r.UUID, Hostname: r.Hostname, Reason: r.Reason, Revision: rev.ID, At: now, Replica: c.replica})
	}
	var revoked []store.Envoy
	if len(rs) > 0 {
		if revoked, err = c.st.RevokeEnvoys(ctx, rs); err != nil {
			return fmt.Errorf("apply revocations of policy %s: %w", rev.ID, err)
		}
		for _, e := range revoked {
			c.log.Info("envoy revoked by policy", "envoy_uuid", e.UUID, "hostname", e.Hostname, "revision", rev.ID)
		}
	}
	details := map[string]string{"source": c.src.String(), "revoked": strconv.Itoa(len(revoked))}
	if rev.Signer != "" {
		details["signer"] = rev.Signer
	}
	if rev.Author != "" {
		details["author"] = rev.Author
	}
	err = c.st.AppendAudit(ctx, store.AuditEvent{
		At: now, Type: store.AuditPolicyApplied, Result: "ok", Revision: rev.ID, Replica: c.replica, Details: details,
	})
	if err != nil {
		return fmt.Errorf("audit policy %s: %w", rev.ID, err)
	}
	return nil
}

func (c *Controller) reject(ctx context.Context, rev gitsync.Revision, attempt *apiv1.PolicyAttempt, kind string) error {
	c.m.syncErrors.WithLabelValues(kind).Inc()
	c.setAttemptedValid(false)
	c.mu.Lock()
	c.attempted = attempt
	c.mu.Unlock()
	msgs := make([]string, 0, len(attempt.Errors))
	for _, e := range attempt.Errors {
		msgs = append(msgs, formatError(e))
	}
	reason := strings.Join(msgs, "\n")
	c.log.Warn("policy rejected, last good revision stays active", "revision", rev.ID, "err", reason)
	details := map[string]string{"source": c.src.String(), "kind": kind, "errors": strconv.Itoa(len(attempt.Errors))}
	if rev.Author != "" {
		details["author"] = rev.Author
	}
	const maxReason = 4 << 10
	if len(reason) > maxReason {
		reason = reason[:maxReason] + "…"
	}
	err := c.st.AppendAudit(ctx, store.AuditEvent{
		At: attempt.At, Type: store.AuditPolicyRejected, Result: "rejected", Revision: rev.ID,
		Reason: reason, Replica: c.replica, Details: details,
	})
	if err != nil {
		c.m.syncErrors.WithLabelValues(kindStore).Inc()
		return fmt.Errorf("audit policy %s: %w", rev.ID, err)
	}
	c.remember(attempt)
	return nil
}

func (c *Controller) activate(p *policy.Policy, info *apiv1.PolicyActive) {
	c.active.Store(p)
	c.mu.Lock()
	c.activeInfo = info
	c.mu.Unlock()
	c.m.activeInfo.Reset()
	c.m.activeInfo.WithLabelValues(info.Revision).Set(1)
	if c.onApplied != nil {
		c.onApplied(p)
	}
}

func (c *Controller) remember(a *apiv1.PolicyAttempt) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.verdicts) >= maxVerdicts {
		clear(c.verdicts)
	}
	c.verdicts[a.Revision] = a
}

func (c *Controller) setAttemptedValid(ok bool) {
	if ok {
		c.m.attemptedValid.Set(1)
	} else {
		c.m.attemptedValid.Set(0)
	}
}

// Status returns the policy status of this replica. Healthy means the last
// attempted revision was valid and the source was fetched successfully
// within the last three intervals.
func (c *Controller) Status() apiv1.PolicyStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := apiv1.PolicyStatus{Replica: c.replica, Source: c.src.String(), FetchError: c.fetchErr}
	if c.activeInfo != nil {
		a := *c.activeInfo
		s.Active = &a
	}
	if c.attempted != nil {
		a := *c.attempted
		a.Errors = append([]apiv1.PolicyError{}, a.Errors...)
		s.Attempted = &a
	}
	if !c.lastFetch.IsZero() {
		t := c.lastFetch
		s.LastFetch = &t
	}
	if !c.nextPoll.IsZero() {
		t := c.nextPoll
		s.NextPoll = &t
	}
	s.Healthy = c.attempted != nil && c.attempted.Valid &&
		!c.lastFetch.IsZero() && c.now().Sub(c.lastFetch) <= 3*c.interval
	return s
}

// policyErrors converts a policy.Load error into wire errors with positions.
func policyErrors(err error) []apiv1.PolicyError {
	var pe policy.Errors
	if !errors.As(err, &pe) {
		return []apiv1.PolicyError{{Message: err.Error()}}
	}
	out := make([]apiv1.PolicyError, 0, len(pe))
	for _, e := range pe {
		out = append(out, apiv1.PolicyError{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Message: e.Msg})
	}
	return out
}

func formatError(e apiv1.PolicyError) string {
	pe := policy.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Message}
	return pe.Error()
}

// readFiles copies every file of fsys into a map for the store.
func readFiles(fsys fs.FS) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files[p] = b
		return nil
	})
	return files, err
}
