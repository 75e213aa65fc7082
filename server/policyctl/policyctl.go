// Package policyctl ties a gitsync.Source to the policy package: it fetches
// revisions, evaluates each new one within a memory and time budget (in a
// child process, see package policy/sandbox), and swaps a valid one in
// atomically while an invalid one is rejected and the last good revision
// stays active. It persists the last good revision in its compiled form, so
// that a restart serves it before the first sync without evaluating policy
// content again, and remembers the revisions it refused, so that a restart
// never evaluates those again either. It applies the policy's revocations to
// the store, audits every verdict and every change of the source's health,
// and exports status and metrics.
package policyctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/policy/sandbox"
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
	// Limits is the budget of one evaluation (sandbox defaults when zero).
	Limits sandbox.Limits
	// Evaluator evaluates a revision's files; nil means a sandbox.Evaluator
	// with Limits (a child process of this program, which must call
	// sandbox.RunIfChild first thing in main).
	Evaluator Evaluator
	// OnEvent, when set, receives every Event, from the goroutine that
	// caused it; it must not block (queue the event).
	OnEvent func(Event)
}

// Evaluator evaluates policy files into a spec, as sandbox.Evaluator does:
// policy.Errors, *sandbox.BudgetError or *sandbox.CrashError refuse the
// revision; any other error means it could not be evaluated (try again).
type Evaluator interface {
	Evaluate(ctx context.Context, files []policy.File) (*policy.Spec, error)
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
	onEvent   func(Event)
	m         metrics
	eval      Evaluator
	limits    string // the budget, as remembered with budget refusals

	active  atomic.Pointer[policy.Policy]
	trigger chan struct{}
	notify  <-chan struct{} // the source's change signals, nil if none
	syncMu  sync.Mutex      // one sync at a time

	mu         sync.Mutex // guards the fields below
	activeInfo *apiv1.PolicyActive
	attempted  *apiv1.PolicyAttempt
	lastFetch  time.Time
	nextPoll   time.Time
	fetchErr   string
	fetchFails int    // consecutive failed fetches
	evalErr    string // why the attempted revision could not be evaluated
	evaluating string // the revision being evaluated
	evalSince  time.Time
	verdicts   map[string]*apiv1.PolicyAttempt // revision id -> verdict, once fully applied or rejected
	control    store.PolicyControl             // as read at the last sync or set here
	waiting    *apiv1.PolicyAttempt            // a valid revision held by the control
	conds      map[string]apiv1.Condition      // the last conditions, for transition times
}

type metrics struct {
	activeInfo     *prometheus.GaugeVec
	lastSync       prometheus.Gauge
	syncErrors     *prometheus.CounterVec
	attemptedValid prometheus.Gauge
	healthy        prometheus.Gauge
	evalSeconds    prometheus.Histogram
}

// Kinds of vigo_policy_sync_errors_total (and of refusals).
const (
	kindFetch     = "fetch"     // the source could not be read
	kindVerify    = "verify"    // the head commit's signature was refused
	kindInvalid   = "invalid"   // the policy (or its file tree) is invalid
	kindBudget    = "budget"    // evaluation exceeded the memory or time limit
	kindEvaluator = "evaluator" // the evaluator could not run (retried)
	kindStore     = "store"     // persisting, revoking or auditing failed
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
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigo_policy_source_healthy",
			Help: "1 when the last fetch of the policy source succeeded and the last attempted revision was applied, else 0.",
		}),
		evalSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigo_policy_evaluation_seconds",
			Help:    "Time to evaluate a policy revision (in the sandbox), refused ones included.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
	}
	for _, k := range []string{kindFetch, kindVerify, kindInvalid, kindBudget, kindEvaluator, kindStore} {
		m.syncErrors.WithLabelValues(k) // export zeros
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.activeInfo, m.lastSync, m.syncErrors, m.attemptedValid, m.healthy, m.evalSeconds} {
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
		onEvent:   cfg.OnEvent,
		m:         m,
		eval:      cfg.Evaluator,
		limits:    cfg.Limits.String(),
		trigger:   make(chan struct{}, 1),
		verdicts:  map[string]*apiv1.PolicyAttempt{},
		conds:     map[string]apiv1.Condition{},
	}
	if err := cfg.Limits.Check(); err != nil {
		return nil, fmt.Errorf("new policy controller: %w", err)
	}
	if c.eval == nil {
		c.eval = &sandbox.Evaluator{Limits: cfg.Limits}
	}
	if n, ok := cfg.Source.(gitsync.Notifier); ok {
		c.notify = n.Changes()
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
// that a restarted server enrolls with it before its first sync, and
// recalls the revisions this replica refused, so that they are not
// evaluated again. The policy is built from its compiled form, without
// evaluating its files; only a revision saved by an older server (or with
// another compiled form) is evaluated again, within the budget. It returns
// nil when there is nothing to restore, and an error when the saved
// revision cannot be used (then nothing is active).
func (c *Controller) Restore(ctx context.Context) error {
	refusals, err := c.st.ListPolicyRefusals(ctx, c.replica)
	if err != nil {
		return fmt.Errorf("restore policy: %w", err)
	}
	c.mu.Lock()
	for i := len(refusals) - 1; i >= 0; i-- { // oldest first: the newest wins a clear
		r := refusals[i]
		if r.Kind == kindBudget && r.Limits != c.limits {
			continue // judged under other limits: judge again
		}
		var errs []apiv1.PolicyError
		if err := json.Unmarshal([]byte(r.Errors), &errs); err != nil {
			continue
		}
		c.rememberLocked(&apiv1.PolicyAttempt{Revision: r.Revision, At: r.At, Kind: r.Kind, Errors: errs})
	}
	c.mu.Unlock()

	ctrl, err := c.st.GetPolicyControl(ctx)
	if err != nil {
		return fmt.Errorf("restore policy: %w", err)
	}
	c.mu.Lock()
	c.control = ctrl
	c.mu.Unlock()
	rec, err := c.st.LoadPolicyRevision(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore policy: %w", err)
	}
	var p *policy.Policy
	spec, err := policy.UnmarshalSpec(rec.Spec)
	if err == nil {
		p, err = spec.Compile(rec.ID)
	}
	if err != nil {
		c.log.Info("the saved policy revision has no usable compiled form: evaluating its files", "revision", rec.ID, "reason", err)
		files := make([]policy.File, 0, len(rec.Files))
		for name, b := range rec.Files {
			files = append(files, policy.File{Name: name, Data: b})
		}
		slices.SortFunc(files, func(a, b policy.File) int { return strings.Compare(a.Name, b.Name) })
		spec, err := c.eval.Evaluate(ctx, files)
		if err != nil {
			return fmt.Errorf("restore policy %s: %w", rec.ID, err)
		}
		if p, err = spec.Compile(rec.ID); err != nil {
			return fmt.Errorf("restore policy %s: %w", rec.ID, err)
		}
	}
	info := &apiv1.PolicyActive{Revision: rec.ID, Name: rec.ID, AppliedAt: rec.AppliedAt, Signer: rec.Signer}
	if h, err := c.st.GetPolicyHistory(ctx, rec.ID); err == nil {
		info.Name, info.Subject, info.Author = h.Name, h.Subject, h.Author
	}
	c.activate(p, info)
	if vb, ok := c.src.(gitsync.VerifiedBaser); ok {
		// The active revision passed verification when it was applied.
		vb.SetVerifiedBase(rec.ID)
	}
	c.mu.Lock()
	c.rememberLocked(&apiv1.PolicyAttempt{Revision: rec.ID, Name: info.Name, Subject: info.Subject, Author: info.Author,
		At: rec.AppliedAt, Valid: true, Errors: []apiv1.PolicyError{}})
	c.mu.Unlock()
	c.log.Info("policy restored", "revision", rec.ID, "source", rec.Source)
	return nil
}

// Run syncs at once, then every Interval, on each signal of a Notifier
// source and on Trigger, until ctx is done. It returns nil then. Sync
// failures are logged and shown by Status; they do not stop Run.
func (c *Controller) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-c.notify:
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
// the fetch, of the evaluator or of the store; a refused revision is not an
// error (see Status().Attempted).
func (c *Controller) SyncNow(ctx context.Context) (apiv1.PolicyStatus, error) {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	err := c.sync(ctx)
	c.setHealth()
	return c.Status(), err
}

func (c *Controller) sync(ctx context.Context) error {
	if err := c.readControl(ctx); err != nil {
		return err
	}
	rev, err := c.fetch(ctx)
	if err != nil {
		return err
	}
	for {
		c.mu.Lock()
		v, seen := c.verdicts[rev.ID]
		activeID, waitingID := "", ""
		if c.activeInfo != nil {
			activeID = c.activeInfo.Revision
		}
		if c.waiting != nil {
			waitingID = c.waiting.Revision
		}
		held := c.control.Suspended || c.control.Pinned != ""
		if seen && v.Valid && held && rev.ID != activeID {
			// Judged valid before, held now: it waits, not evaluated again.
			c.waiting = v
			waitingID = v.Revision
		}
		if seen && (!v.Valid || rev.ID == activeID || rev.ID == waitingID) {
			// Already judged: a bad commit is not evaluated again on every
			// poll (nor after a restart), and the active one is not
			// applied again.
			c.attempted, c.evalErr = v, ""
			c.mu.Unlock()
			c.setAttemptedValid(v.Valid)
			return nil
		}
		c.mu.Unlock()
		newer, err := c.evaluate(ctx, rev)
		if newer == nil {
			return err
		}
		// A newer revision arrived while this one was being evaluated:
		// that evaluation was stopped, the newer one goes next.
		rev = *newer
	}
}

// readControl reads the shared suspend and pin state. A pin set through
// another replica is applied here from the history of applied revisions.
func (c *Controller) readControl(ctx context.Context) error {
	ctrl, err := c.st.GetPolicyControl(ctx)
	if err != nil {
		c.m.syncErrors.WithLabelValues(kindStore).Inc()
		return fmt.Errorf("sync policy: %w", err)
	}
	c.mu.Lock()
	c.control = ctrl
	if !ctrl.Suspended && ctrl.Pinned == "" && c.waiting != nil {
		// Released elsewhere: the held revision is judged again and applied.
		delete(c.verdicts, c.waiting.Revision)
		c.waiting = nil
	}
	active := ""
	if c.activeInfo != nil {
		active = c.activeInfo.Revision
	}
	c.mu.Unlock()
	if ctrl.Pinned != "" && ctrl.Pinned != active {
		if err := c.activateFromHistory(ctx, ctrl.Pinned); err != nil {
			c.m.syncErrors.WithLabelValues(kindStore).Inc()
			return fmt.Errorf("sync policy: apply pinned revision: %w", err)
		}
	}
	return nil
}

// activateFromHistory makes an applied revision active again from its
// compiled form, and saves it as the last good revision.
func (c *Controller) activateFromHistory(ctx context.Context, id string) error {
	h, err := c.st.GetPolicyHistory(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("revision %s was never applied by a server of this database (only the last %d are kept)", id, store.MaxPolicyHistory)
	}
	if err != nil {
		return err
	}
	spec, err := policy.UnmarshalSpec(h.Spec)
	if err != nil {
		return fmt.Errorf("revision %s: %w (it was applied by another version of the server)", id, err)
	}
	p, err := spec.Compile(h.ID)
	if err != nil {
		return fmt.Errorf("revision %s: %w", id, err)
	}
	now := c.now()
	if err := c.st.SavePolicyRevision(ctx, store.PolicyRevision{ID: h.ID, Source: c.src.String(), Spec: h.Spec, Signer: h.Signer, AppliedAt: now}); err != nil {
		return err
	}
	c.activate(p, &apiv1.PolicyActive{Revision: h.ID, Name: h.Name, Subject: h.Subject, Author: h.Author, AppliedAt: now, Signer: h.Signer})
	c.log.Info("policy applied from history", "revision", h.ID)
	return nil
}

// fetch fetches the source and records the outcome: a failure makes the
// status unhealthy at once and is audited when it starts (and its end when
// it ends).
func (c *Controller) fetch(ctx context.Context) (gitsync.Revision, error) {
	rev, _, err := c.src.Fetch(ctx)
	now := c.now()
	if err != nil {
		if ctx.Err() != nil {
			return gitsync.Revision{}, ctx.Err()
		}
		c.m.syncErrors.WithLabelValues(kindFetch).Inc()
		c.mu.Lock()
		first := c.fetchFails == 0 // one audit event per outage, whatever its messages
		c.fetchErr = err.Error()
		c.fetchFails++
		c.mu.Unlock()
		if first {
			c.audit(ctx, store.AuditEvent{At: now, Type: store.AuditPolicyFetchFailed, Result: "failed", Reason: truncate(err.Error()),
				Details: map[string]string{"source": c.src.String()}})
			c.emit(Event{Type: EventSourceFailed, At: now, Reason: err.Error()})
		}
		return gitsync.Revision{}, fmt.Errorf("sync policy: %w", err)
	}
	c.m.lastSync.Set(float64(now.UnixNano()) / 1e9)
	c.mu.Lock()
	recovered := c.fetchFails > 0
	c.lastFetch, c.fetchErr, c.fetchFails = now, "", 0
	c.mu.Unlock()
	if recovered {
		c.audit(ctx, store.AuditEvent{At: now, Type: store.AuditPolicyFetchRecovered, Result: "ok", Revision: rev.ID,
			Details: map[string]string{"source": c.src.String()}})
		c.emit(Event{Type: EventSourceRecovered, At: now, Revision: rev.ID, Name: rev.Name})
	}
	return rev, nil
}

// audit appends ev, logging a failure: an audit event about the source
// must not stop a sync.
func (c *Controller) audit(ctx context.Context, ev store.AuditEvent) {
	ev.Replica = c.replica
	if err := c.st.AppendAudit(ctx, ev); err != nil && ctx.Err() == nil {
		c.m.syncErrors.WithLabelValues(kindStore).Inc()
		c.log.Error("audit policy event", "type", ev.Type, "err", err)
	}
}

// evaluate validates rev and applies or rejects it. When the source
// signals a change during the evaluation and has a newer revision, the
// evaluation is stopped and the newer revision returned, to be evaluated
// next.
func (c *Controller) evaluate(ctx context.Context, rev gitsync.Revision) (newer *gitsync.Revision, err error) {
	start := time.Now()
	now := c.now()
	attempt := &apiv1.PolicyAttempt{Revision: rev.ID, Name: rev.Name, Subject: rev.Subject, Author: rev.Author,
		At: now, Valid: true, Errors: []apiv1.PolicyError{}}
	c.emit(Event{Type: EventEvaluating, At: now, Revision: rev.ID, Name: rev.Name, Subject: rev.Subject, Author: rev.Author})
	switch {
	case len(rev.Problems) > 0:
		// The file tree breaks a rule that vet applies as well.
		attempt.Kind = kindInvalid
		for _, p := range rev.Problems {
			attempt.Errors = append(attempt.Errors, apiv1.PolicyError{File: p.Path, Message: p.Msg})
		}
	case rev.VerifyErr != nil:
		attempt.Kind = kindVerify
		attempt.Errors = []apiv1.PolicyError{{Message: "commit signature: " + rev.VerifyErr.Error()}}
	}
	if attempt.Kind != "" {
		attempt.Valid = false
		return nil, c.reject(ctx, rev, attempt)
	}

	spec, newer, err := c.runEvaluator(ctx, rev)
	c.m.evalSeconds.Observe(time.Since(start).Seconds())
	if newer != nil {
		c.log.Info("policy evaluation stopped: a newer revision arrived", "revision", rev.ID, "newer", newer.ID)
		return newer, nil
	}
	var p *policy.Policy
	if err == nil {
		p, err = spec.Compile(rev.ID)
	}
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
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		es, refused := sandbox.Errors(err)
		if !refused {
			// The evaluator could not run: nothing is judged, the next sync
			// tries again.
			c.m.syncErrors.WithLabelValues(kindEvaluator).Inc()
			c.mu.Lock()
			c.evalErr = err.Error()
			c.mu.Unlock()
			return nil, fmt.Errorf("evaluate policy %s: %w", rev.ID, err)
		}
		attempt.Valid = false
		attempt.Kind = kindInvalid
		var be *sandbox.BudgetError
		if errors.As(err, &be) {
			attempt.Kind = kindBudget
		}
		attempt.Errors = wireErrors(es)
		return nil, c.reject(ctx, rev, attempt)
	}

	// Held by the control: judged valid, applied when released. The
	// control is read again here, so a suspension made through another
	// replica during the evaluation holds.
	if ctrl, err := c.st.GetPolicyControl(ctx); err == nil {
		c.mu.Lock()
		c.control = ctrl
		c.mu.Unlock()
	}
	c.mu.Lock()
	held := c.control.Suspended || c.control.Pinned != ""
	if held {
		c.attempted, c.evalErr, c.waiting = attempt, "", attempt
		c.rememberLocked(attempt)
	}
	c.mu.Unlock()
	if held {
		c.setAttemptedValid(true)
		c.log.Info("policy revision valid but not applied: applying is suspended or a revision is pinned", "revision", rev.ID)
		c.emit(Event{Type: EventWaiting, At: now, Revision: rev.ID, Name: rev.Name, Subject: rev.Subject, Author: rev.Author})
		return nil, nil
	}

	// Store side effects first: the revision is active only once its
	// revocations are in the store, so nobody sees the new revision while
	// an envoy it revokes can still check in. When a step fails the
	// previous policy stays active and the verdict is not remembered, so
	// the next sync applies the revision again (every step is idempotent).
	revoked, err := c.persist(ctx, rev, p, now)
	if err != nil {
		c.m.syncErrors.WithLabelValues(kindStore).Inc()
		return nil, err
	}
	c.activate(p, &apiv1.PolicyActive{Revision: rev.ID, Name: rev.Name, Subject: rev.Subject, Author: rev.Author, AppliedAt: now, Signer: rev.Signer})
	c.mu.Lock()
	c.attempted, c.evalErr, c.waiting = attempt, "", nil
	c.rememberLocked(attempt)
	c.mu.Unlock()
	c.setAttemptedValid(true)
	c.log.Info("policy applied", "revision", rev.ID, "signer", rev.Signer, "author", rev.Author, "duration", time.Since(start))
	ev := Event{Type: EventApplied, At: now, Revision: rev.ID, Name: rev.Name, Subject: rev.Subject, Author: rev.Author, RevokedCount: len(revoked)}
	for i, e := range revoked {
		if i == 50 {
			break
		}
		ev.Revoked = append(ev.Revoked, e.Hostname+" ("+e.UUID+")")
	}
	c.emit(ev)
	return nil, nil
}

// runEvaluator evaluates rev's files. While it runs, a change signal of
// the source or a Trigger makes it fetch the source: a newer revision stops
// the evaluation and is returned instead (a runaway evaluation then never
// holds up an urgent change for more than the time it takes to notice).
func (c *Controller) runEvaluator(ctx context.Context, rev gitsync.Revision) (*policy.Spec, *gitsync.Revision, error) {
	files := make([]policy.File, len(rev.Files))
	for i, f := range rev.Files {
		files[i] = policy.File{Name: f.Name, Data: f.Data}
	}
	c.mu.Lock()
	c.evaluating, c.evalSince = rev.ID, c.now()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.evaluating = ""
		c.mu.Unlock()
	}()
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		spec *policy.Spec
		err  error
	}
	done := make(chan result, 1)
	go func() {
		spec, err := c.eval.Evaluate(ectx, files)
		done <- result{spec, err}
	}()
	for {
		select {
		case r := <-done:
			return r.spec, nil, r.err
		case <-c.notify:
		case <-c.trigger:
		}
		next, err := c.fetch(ctx)
		if err != nil || next.ID == rev.ID {
			continue
		}
		cancel()
		<-done
		return nil, &next, nil
	}
}
func (c *Controller) persist(ctx context.Context, rev gitsync.Revision, p *policy.Policy, now time.Time) ([]store.Envoy, error) {
	files := make(map[string][]byte, len(rev.Files))
	for _, f := range rev.Files {
		files[f.Name] = f.Data
	}
	spec, err := policy.MarshalSpec(p.Spec())
	if err != nil {
		return nil, fmt.Errorf("persist policy %s: %w", rev.ID, err)
	}
	err = c.st.SavePolicyRevision(ctx, store.PolicyRevision{
		ID: rev.ID, Source: c.src.String(), Files: files, Spec: spec, Signer: rev.Signer, AppliedAt: now,
	})
	if err != nil {
		return nil, fmt.Errorf("persist policy %s: %w", rev.ID, err)
	}
	err = c.st.SavePolicyHistory(ctx, store.PolicyHistory{
		ID: rev.ID, Name: rev.Name, Subject: rev.Subject, Author: rev.Author, Signer: rev.Signer, Spec: spec, AppliedAt: now, Replica: c.replica,
	})
	if err != nil {
		return nil, fmt.Errorf("persist policy %s: %w", rev.ID, err)
	}
	var rs []store.Revocation
	for _, r := range p.Revocations() {
		rs = append(rs, store.Revocation{UUID: r.UUID, Hostname: r.Hostname, Reason: r.Reason, Revision: rev.ID, At: now, Replica: c.replica})
	}
	var revoked []store.Envoy
	if len(rs) > 0 {
		if revoked, err = c.st.RevokeEnvoys(ctx, rs); err != nil {
			return nil, fmt.Errorf("apply revocations of policy %s: %w", rev.ID, err)
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
		return nil, fmt.Errorf("audit policy %s: %w", rev.ID, err)
	}
	return revoked, nil
}

func (c *Controller) reject(ctx context.Context, rev gitsync.Revision, attempt *apiv1.PolicyAttempt) error {
	c.m.syncErrors.WithLabelValues(attempt.Kind).Inc()
	c.setAttemptedValid(false)
	c.mu.Lock()
	c.attempted, c.evalErr = attempt, ""
	c.mu.Unlock()
	msgs := make([]string, 0, len(attempt.Errors))
	for _, e := range attempt.Errors {
		msgs = append(msgs, formatError(e))
	}
	reason := strings.Join(msgs, "\n")
	c.log.Warn("policy rejected, last good revision stays active", "revision", rev.ID, "kind", attempt.Kind, "err", reason)
	details := map[string]string{"source": c.src.String(), "kind": attempt.Kind, "errors": strconv.Itoa(len(attempt.Errors))}
	if rev.Author != "" {
		details["author"] = rev.Author
	}
	if attempt.Kind == kindBudget {
		details["limits"] = c.limits
	}
	err := c.st.AppendAudit(ctx, store.AuditEvent{
		At: attempt.At, Type: store.AuditPolicyRejected, Result: "rejected", Revision: rev.ID,
		Reason: truncate(reason), Replica: c.replica, Details: details,
	})
	if err != nil {
		c.m.syncErrors.WithLabelValues(kindStore).Inc()
		return fmt.Errorf("audit policy %s: %w", rev.ID, err)
	}
	// Remembered in the store too: a restart must never evaluate this
	// revision again (a revision that crashed or exhausted the evaluator
	// would otherwise be evaluated at every start).
	errs := attempt.Errors
	if len(errs) > 50 {
		errs = errs[:50]
	}
	b, _ := json.Marshal(errs)
	if err := c.st.SavePolicyRefusal(ctx, store.PolicyRefusal{
		Replica: c.replica, Revision: rev.ID, Kind: attempt.Kind, Limits: c.limits, Errors: string(b), At: attempt.At,
	}); err != nil {
		c.m.syncErrors.WithLabelValues(kindStore).Inc()
		return fmt.Errorf("remember refused policy %s: %w", rev.ID, err)
	}
	c.mu.Lock()
	c.rememberLocked(attempt)
	c.mu.Unlock()
	c.emit(Event{Type: EventRefused, At: attempt.At, Revision: rev.ID, Name: rev.Name, Subject: rev.Subject, Author: rev.Author,
		Kind: attempt.Kind, Errors: attempt.Errors})
	return nil
}

// truncate bounds a reason written to the audit log.
func truncate(s string) string {
	const maxReason = 4 << 10
	if len(s) > maxReason {
		return s[:maxReason] + "…"
	}
	return s
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

// rememberLocked records a verdict; c.mu is held.
func (c *Controller) rememberLocked(a *apiv1.PolicyAttempt) {
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

// Status returns the policy status of this replica. Healthy means the
// last fetch of the source succeeded, within the last three intervals, and
// the last attempted revision was applied; Reason says why not.
func (c *Controller) Status() apiv1.PolicyStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := apiv1.PolicyStatus{Replica: c.replica, Source: c.src.String(), FetchError: c.fetchErr, EvalLimits: c.limits}
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
	if c.evaluating != "" {
		t := c.evalSince
		s.Evaluating, s.EvaluatingSince = c.evaluating, &t
	}
	if ctl := c.control; ctl.Suspended {
		s.Suspended = &apiv1.PolicyHold{Reason: ctl.SuspendReason, By: ctl.SuspendedBy, At: ctl.SuspendedAt}
	}
	if ctl := c.control; ctl.Pinned != "" {
		s.Pinned = &apiv1.PolicyHold{Revision: ctl.Pinned, Reason: ctl.PinReason, By: ctl.PinnedBy, At: ctl.PinnedAt}
	}
	if c.waiting != nil {
		w := *c.waiting
		s.Waiting = &w
	}
	s.Reason = c.unhealthyLocked()
	s.Healthy = s.Reason == ""
	s.Conditions = c.conditionsLocked(s)
	return s
}

// conditionsLocked derives the Ready, Reconciling and Stalled conditions
// from s, keeping the transition time of a condition whose status and
// reason did not change.
func (c *Controller) conditionsLocked(s apiv1.PolicyStatus) []apiv1.Condition {
	name := func(id, n string) string {
		if n != "" {
			return n
		}
		return id
	}
	ready := apiv1.Condition{Type: apiv1.ConditionReady, Status: "Unknown", Reason: "Progressing", Message: "the policy source has not been fetched yet"}
	stalled := apiv1.Condition{Type: apiv1.ConditionStalled, Status: "False", Reason: "Succeeded"}
	reconciling := apiv1.Condition{Type: apiv1.ConditionReconciling, Status: "False", Reason: "Succeeded"}
	a := s.Attempted
	switch {
	case c.fetchErr != "":
		ready = apiv1.Condition{Type: apiv1.ConditionReady, Status: "False", Reason: "FetchFailed", Message: c.fetchErr}
	case c.evalErr != "":
		ready = apiv1.Condition{Type: apiv1.ConditionReady, Status: "False", Reason: "EvaluatorFailed", Message: c.evalErr}
	case a != nil && !a.Valid:
		reason := map[string]string{kindVerify: "VerificationFailed", kindBudget: "BudgetExceeded"}[a.Kind]
		if reason == "" {
			reason = "ValidationFailed"
		}
		msg := fmt.Sprintf("revision %s refused", name(a.Revision, a.Name))
		if len(a.Errors) > 0 {
			msg += ": " + formatError(a.Errors[0])
			if len(a.Errors) > 1 {
				msg += fmt.Sprintf(" (and %d more)", len(a.Errors)-1)
			}
		}
		ready = apiv1.Condition{Type: apiv1.ConditionReady, Status: "False", Reason: reason, Message: msg}
		// The same commit will be refused again: only a new commit helps.
		stalled = apiv1.Condition{Type: apiv1.ConditionStalled, Status: "True", Reason: reason, Message: msg}
	case s.Waiting != nil:
		reason, what := "Suspended", "applying is suspended"
		if s.Pinned != nil {
			reason, what = "Pinned", "revision "+s.Pinned.Revision+" is pinned"
		}
		ready = apiv1.Condition{Type: apiv1.ConditionReady, Status: "False", Reason: reason,
			Message: fmt.Sprintf("revision %s is valid and waits: %s", name(s.Waiting.Revision, s.Waiting.Name), what)}
	case s.Reason != "":
		ready = apiv1.Condition{Type: apiv1.ConditionReady, Status: "False", Reason: "FetchFailed", Message: s.Reason}
	case s.Active != nil:
		msg := "applied revision " + name(s.Active.Revision, s.Active.Name)
		if s.Pinned != nil {
			msg += " (pinned)"
		}
		ready = apiv1.Condition{Type: apiv1.ConditionReady, Status: "True", Reason: "Succeeded", Message: msg}
	}
	if s.Evaluating != "" {
		reconciling = apiv1.Condition{Type: apiv1.ConditionReconciling, Status: "True", Reason: "Progressing", Message: "evaluating revision " + s.Evaluating}
	}
	now := c.now()
	out := []apiv1.Condition{ready, reconciling, stalled}
	for i, cd := range out {
		prev, ok := c.conds[cd.Type]
		if ok && prev.Status == cd.Status && prev.Reason == cd.Reason {
			cd.LastTransitionTime = prev.LastTransitionTime
		} else {
			cd.LastTransitionTime = now
		}
		c.conds[cd.Type] = cd
		out[i] = cd
	}
	return out
}

// unhealthyLocked returns why the source is not healthy, or "".
func (c *Controller) unhealthyLocked() string {
	switch {
	case c.fetchErr != "":
		return "the last fetch of the policy source failed: " + c.fetchErr
	case c.evalErr != "":
		return "the last revision could not be evaluated (it will be tried again): " + c.evalErr
	case c.lastFetch.IsZero():
		return "the policy source has not been fetched yet"
	case c.now().Sub(c.lastFetch) > 3*c.interval:
		return fmt.Sprintf("no successful fetch of the policy source for %s (three poll intervals)", c.now().Sub(c.lastFetch).Round(time.Second))
	case c.attempted == nil:
		return "no revision has been attempted yet"
	case !c.attempted.Valid:
		what := "invalid"
		switch c.attempted.Kind {
		case kindVerify:
			what = "refused by signature verification"
		case kindBudget:
			what = "refused: its evaluation exceeded the budget (" + c.limits + ")"
		}
		return fmt.Sprintf("revision %s is %s; the last good revision stays active", c.attempted.Revision, what)
	}
	return ""
}

// setHealth updates the health gauge.
func (c *Controller) setHealth() {
	c.mu.Lock()
	ok := c.unhealthyLocked() == ""
	c.mu.Unlock()
	if ok {
		c.m.healthy.Set(1)
	} else {
		c.m.healthy.Set(0)
	}
}

// wireErrors converts policy errors into wire errors with positions.
func wireErrors(pe policy.Errors) []apiv1.PolicyError {
	out := make([]apiv1.PolicyError, 0, len(pe))
	for _, e := range pe {
		out = append(out, e.Wire())
	}
	return out
}

func formatError(e apiv1.PolicyError) string { return policy.ErrorFromWire(e).Error() }
