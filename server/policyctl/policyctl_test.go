package policyctl_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/policy/sandbox"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/policyctl"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

const validPolicy = `package policy

approved: ["*.web.example.com"]
revocations: [{hostname: "old.example.com", reason: "decommissioned"}]
`

const validPolicy2 = `package policy

approved: ["*.web.example.com", "db?.example.com"]
`

// invalidPolicy has a typo in a field name (the schema is closed) on line 3.
const invalidPolicy = `package policy

approvd: ["*.web.example.com"]
`

// TestMain lets the test binary be the policy evaluator's child process.
func TestMain(m *testing.M) {
	sandbox.RunIfChild()
	os.Exit(m.Run())
}

func openStore(t testing.TB) *sqlitestore.Store {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "vigo.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

type fixture struct {
	repo *gitsynctest.Repo
	st   *sqlitestore.Store
	reg  *prometheus.Registry
	ctl  *policyctl.Controller
	now  time.Time
}

func newFixture(t *testing.T, verify gitsync.VerifyConfig) *fixture {
	t.Helper()
	f := &fixture{repo: gitsynctest.NewRepo(t), st: openStore(t), reg: prometheus.NewRegistry(), now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	f.ctl = f.newController(t, f.repo.URL(), verify)
	return f
}

func (f *fixture) newController(t *testing.T, url string, verify gitsync.VerifyConfig) *policyctl.Controller {
	t.Helper()
	src, err := gitsync.NewGit(gitsync.GitConfig{URL: url, Path: "policy", Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := policyctl.New(policyctl.Config{
		Source: src, Store: f.st, Interval: time.Minute, Replica: "r1",
		Now: func() time.Time { return f.now }, Registerer: f.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ctl
}

func (f *fixture) push(t *testing.T, content, msg string) string {
	t.Helper()
	id := f.repo.Commit(map[string]string{"policy/policy.cue": content}, msg)
	f.repo.Push()
	return id
}

func (f *fixture) audit(t *testing.T, typ string) []store.AuditEvent {
	t.Helper()
	evs, err := f.st.ListAudit(context.Background(), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for _, e := range evs {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func enrollEnvoy(t *testing.T, st store.Store, uuid, hostname string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Enroll(context.Background(), store.EnrollParams{
		Envoy: store.Envoy{UUID: uuid, Hostname: hostname, PublicKey: pub, CertSerial: "01", CertNotAfter: time.Now().Add(time.Hour), Method: "token"},
		Now:   time.Now(),
		Audit: store.AuditEvent{Type: store.AuditRegistration, Result: "allowed", Hostname: hostname},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestControllerLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, gitsync.VerifyConfig{})
	enrollEnvoy(t, f.st, "11111111-1111-4111-8111-111111111111", "old.example.com")
	enrollEnvoy(t, f.st, "22222222-2222-4222-8222-222222222222", "new.example.com")

	if f.ctl.Active() != nil {
		t.Fatal("a policy is active before any sync")
	}
	if err := f.ctl.Restore(ctx); err != nil {
		t.Fatalf("Restore with nothing saved: %v", err)
	}

	// 1. A valid revision becomes active, is persisted, revokes, is audited.
	good := f.push(t, validPolicy, "good")
	st, err := f.ctl.SyncNow(ctx)
	if err != nil {
		t.Fatalf("SyncNow: %v", err)
	}
	if got := f.ctl.Active().Revision(); got != good {
		t.Fatalf("active revision = %q, want %s", got, good)
	}
	now := f.now
	name := "main@sha1:" + good
	want := apiv1.PolicyStatus{
		Replica: "r1", Source: st.Source, Healthy: true,
		Active:     &apiv1.PolicyActive{Revision: good, Name: name, Subject: "good", Author: "Test Author <author@example.com>", AppliedAt: now},
		Attempted:  &apiv1.PolicyAttempt{Revision: good, Name: name, Subject: "good", Author: "Test Author <author@example.com>", At: now, Valid: true, Errors: []apiv1.PolicyError{}},
		LastFetch:  &now,
		EvalLimits: "256 MiB, 10s",
		Conditions: []apiv1.Condition{
			{Type: "Ready", Status: "True", Reason: "Succeeded", Message: "applied revision " + name, LastTransitionTime: now},
			{Type: "Reconciling", Status: "False", Reason: "Succeeded", LastTransitionTime: now},
			{Type: "Stalled", Status: "False", Reason: "Succeeded", LastTransitionTime: now},
		},
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if !strings.Contains(st.Source, "#main:policy") {
		t.Errorf("source = %q", st.Source)
	}
	saved, err := f.st.LoadPolicyRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if saved.ID != good || string(saved.Files["policy.cue"]) != validPolicy {
		t.Errorf("saved revision %s files %q", saved.ID, saved.Files)
	}
	if spec, err := policy.UnmarshalSpec(saved.Spec); err != nil || len(spec.Approved) != 1 {
		t.Errorf("saved compiled policy = %s, %v", saved.Spec, err)
	}
	old, err := f.st.GetEnvoy(ctx, "11111111-1111-4111-8111-111111111111")
	if err != nil {
		t.Fatal(err)
	}
	if old.Status != store.StatusRevoked || old.RevokedRevision != good || old.RevokedReason != "decommissioned" {
		t.Errorf("revoked envoy = %s %q %q, want revoked by %s", old.Status, old.RevokedRevision, old.RevokedReason, good)
	}
	if e, _ := f.st.GetEnvoy(ctx, "22222222-2222-4222-8222-222222222222"); e.Status != store.StatusActive {
		t.Errorf("unrelated envoy status = %s", e.Status)
	}
	if applied := f.audit(t, store.AuditPolicyApplied); len(applied) != 1 || applied[0].Revision != good || applied[0].Replica != "r1" {
		t.Errorf("policy.applied audit = %+v", applied)
	}
	if v := gauge(t, f.reg, "vigo_policy_attempted_valid"); v != 1 {
		t.Errorf("attempted_valid = %v", v)
	}

	// 2. An invalid revision is rejected; the good one stays active.
	f.now = f.now.Add(time.Minute)
	bad := f.push(t, invalidPolicy, "bad")
	st, err = f.ctl.SyncNow(ctx)
	if err != nil {
		t.Fatalf("SyncNow: %v", err)
	}
	if got := f.ctl.Active().Revision(); got != good {
		t.Errorf("active revision after a bad commit = %q, want %s", got, good)
	}
	if st.Healthy || st.Attempted.Valid || st.Attempted.Revision != bad || st.Active.Revision != good || st.Attempted.Kind != "invalid" {
		t.Errorf("status after a bad commit = %+v", st)
	}
	if want := "revision " + bad + " is invalid; the last good revision stays active"; st.Reason != want {
		t.Errorf("reason = %q, want %q", st.Reason, want)
	}
	wantConds := []apiv1.Condition{
		{Type: "Ready", Status: "False", Reason: "ValidationFailed", LastTransitionTime: f.now,
			Message: "revision main@sha1:" + bad + " refused: policy.cue:3:1: approvd: field not allowed (did you mean approved?)"},
		{Type: "Reconciling", Status: "False", Reason: "Succeeded", LastTransitionTime: now},
		{Type: "Stalled", Status: "True", Reason: "ValidationFailed", LastTransitionTime: f.now,
			Message: "revision main@sha1:" + bad + " refused: policy.cue:3:1: approvd: field not allowed (did you mean approved?)"},
	}
	if diff := cmp.Diff(wantConds, st.Conditions); diff != "" {
		t.Errorf("conditions after a bad commit (-want +got):\n%s", diff)
	}
	if len(st.Attempted.Errors) == 0 || st.Attempted.Errors[0].File != "policy.cue" || st.Attempted.Errors[0].Line != 3 {
		t.Errorf("attempt errors = %+v, want one at policy.cue:3", st.Attempted.Errors)
	}
	// The verdict is remembered: polling again does not re-evaluate.
	for range 2 {
		if _, err := f.ctl.SyncNow(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rejected := f.audit(t, store.AuditPolicyRejected)
	if len(rejected) != 1 || rejected[0].Revision != bad || !strings.Contains(rejected[0].Reason, "policy.cue:3") {
		t.Errorf("policy.rejected audit = %+v, want one for %s", rejected, bad)
	}
	if v := gauge(t, f.reg, "vigo_policy_attempted_valid"); v != 0 {
		t.Errorf("attempted_valid = %v, want 0", v)
	}

	// 3. A fix is applied.
	f.now = f.now.Add(time.Minute)
	fixed := f.push(t, validPolicy2, "fix")
	if _, err := f.ctl.SyncNow(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.ctl.Active().Revision(); got != fixed {
		t.Errorf("active revision = %q, want %s", got, fixed)
	}
	if got := f.ctl.Status(); !got.Healthy {
		t.Errorf("status after the fix is not healthy: %+v", got)
	}
	wantMetrics := map[string]float64{
		`vigo_policy_active_info{revision="` + fixed + `"}`: 1,
		`vigo_policy_attempted_valid`:                       1,
		`vigo_policy_source_healthy`:                        1,
		`vigo_policy_sync_errors_total{kind="budget"}`:      0,
		`vigo_policy_sync_errors_total{kind="evaluator"}`:   0,
		`vigo_policy_sync_errors_total{kind="fetch"}`:       0,
		`vigo_policy_sync_errors_total{kind="invalid"}`:     1,
		`vigo_policy_sync_errors_total{kind="store"}`:       0,
		`vigo_policy_sync_errors_total{kind="verify"}`:      0,
		`vigo_policy_last_sync_timestamp_seconds`:           float64(f.now.Unix()),
	}
	if diff := cmp.Diff(wantMetrics, metricValues(t, f.reg)); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}

	// 4. Healthy only while fetches succeed within three intervals.
	f.now = f.now.Add(3*time.Minute + time.Second)
	if f.ctl.Status().Healthy {
		t.Error("healthy without a fetch for more than three intervals")
	}

	// 5. A restarted server serves the last good revision before its first
	// sync, even when the remote is down, from its compiled form: no
	// evaluation of policy content at start.
	f2 := &fixture{st: f.st, reg: prometheus.NewRegistry(), now: f.now}
	var appliedCalls []string
	src, err := gitsync.NewGit(gitsync.GitConfig{URL: "file://" + filepath.Join(t.TempDir(), "gone.git")})
	if err != nil {
		t.Fatal(err)
	}
	evals := &countingEvaluator{}
	ctl2, err := policyctl.New(policyctl.Config{
		Source: src, Store: f2.st, Replica: "r2", Now: func() time.Time { return f2.now }, Evaluator: evals,
		OnApplied: func(p *policy.Policy) { appliedCalls = append(appliedCalls, p.Revision()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl2.Restore(ctx); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := ctl2.Active().Revision(); got != fixed {
		t.Errorf("restored revision = %q, want %s", got, fixed)
	}
	if n := evals.n.Load(); n != 0 {
		t.Errorf("Restore evaluated policy content %d times, want 0 (the compiled form is saved)", n)
	}
	st2, err := ctl2.SyncNow(ctx)
	if err == nil {
		t.Error("SyncNow with the remote gone succeeded")
	}
	if st2.FetchError == "" || st2.Healthy || st2.Active == nil || st2.Active.Revision != fixed || !strings.HasPrefix(st2.Reason, "the last fetch of the policy source failed: ") {
		t.Errorf("status with the remote gone = %+v", st2)
	}
	if diff := cmp.Diff([]string{fixed}, appliedCalls); diff != "" {
		t.Errorf("OnApplied calls (-want +got):\n%s", diff)
	}
}

// metricValues returns every sample of g as "name{label="value"}" -> value.
func metricValues(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// gauge returns the value of the unlabelled gauge name.
func gauge(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestControllerSignedCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	key := gitsynctest.NewSSHKey(t)
	f := newFixture(t, gitsync.VerifyConfig{SSHAllowedSignersFile: gitsynctest.AllowedSigners(t, key)})

	signed := f.repo.CommitSigned(map[string]string{"policy/policy.cue": validPolicy}, "signed", key)
	f.repo.Push()
	st, err := f.ctl.SyncNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Active == nil || st.Active.Revision != signed || st.Active.Signer != key.Fingerprint {
		t.Fatalf("active = %+v, want %s signed by %s", st.Active, signed, key.Fingerprint)
	}
	if a := f.audit(t, store.AuditPolicyApplied); len(a) != 1 || a[0].Details["signer"] != key.Fingerprint {
		t.Errorf("policy.applied audit = %+v, want signer %s", a, key.Fingerprint)
	}

	unsigned := f.push(t, validPolicy2, "unsigned but valid")
	st, err = f.ctl.SyncNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Active.Revision != signed || st.Attempted.Revision != unsigned || st.Attempted.Valid {
		t.Errorf("after an unsigned commit: active %s attempted %+v", st.Active.Revision, st.Attempted)
	}
	if len(st.Attempted.Errors) != 1 || !strings.Contains(st.Attempted.Errors[0].Message, gitsync.ErrUnsigned.Error()) {
		t.Errorf("attempt errors = %+v", st.Attempted.Errors)
	}
	if r := f.audit(t, store.AuditPolicyRejected); len(r) != 1 || r[0].Details["kind"] != "verify" {
		t.Errorf("policy.rejected audit = %+v", r)
	}
}

func TestControllerPolicyTestsMustPass(t *testing.T) {
	t.Parallel()
	f := newFixture(t, gitsync.VerifyConfig{})
	id := f.push(t, validPolicy+`tests: [{hostname: "x.example.com", ip: "192.0.2.1", expect: "approved"}]
`, "failing test")
	st, err := f.ctl.SyncNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f.ctl.Active() != nil || st.Attempted == nil || st.Attempted.Revision != id || st.Attempted.Valid {
		t.Fatalf("a policy whose tests fail was not rejected: %+v", st.Attempted)
	}
	if len(st.Attempted.Errors) != 1 || st.Attempted.Errors[0].File != "policy.cue" {
		t.Errorf("errors = %+v, want one located in policy.cue", st.Attempted.Errors)
	}
}

// TestControllerRunWithDir runs the controller with a local folder: each
// saved change becomes active without a poll (Notifier), and Trigger and
// concurrent SyncNow calls are safe.
func TestControllerRunWithDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.cue"), []byte(validPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := gitsync.NewDir(gitsync.DirConfig{Path: dir, Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	applied := make(chan string, 16)
	ctl, err := policyctl.New(policyctl.Config{
		Source: src, Store: openStore(t), Interval: time.Hour,
		OnApplied: func(p *policy.Policy) { applied <- p.Revision() },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- src.Run(ctx) }()
	go func() { done <- ctl.Run(ctx) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}()
	wait := func(what string) string {
		t.Helper()
		select {
		case id := <-applied:
			return id
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: no policy applied", what)
			return ""
		}
	}
	first := wait("initial sync")
	if !strings.HasPrefix(first, "local@sha256:") {
		t.Errorf("revision = %q", first)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.cue"), []byte(validPolicy2), 0o644); err != nil {
		t.Fatal(err)
	}
	second := wait("after an edit")
	if second == first || ctl.Active().Revision() != second {
		t.Errorf("revisions %s then %s, active %s", first, second, ctl.Active().Revision())
	}
	ctl.Trigger()
	errs := make(chan error, 4)
	for range 4 {
		go func() { _, err := ctl.SyncNow(ctx); errs <- err }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("SyncNow: %v", err)
		}
	}
	if st := ctl.Status(); st.NextPoll == nil || !st.Healthy {
		t.Errorf("status = %+v, want healthy with a next poll", st)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	src, err := gitsync.NewDir(gitsync.DirConfig{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t)
	reg := prometheus.NewRegistry()
	tests := []struct {
		name string
		cfg  policyctl.Config
	}{
		{"no source", policyctl.Config{Store: st}},
		{"no store", policyctl.Config{Source: src}},
	}
	for _, tt := range tests {
		if _, err := policyctl.New(tt.cfg); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
	if _, err := policyctl.New(policyctl.Config{Source: src, Store: st, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	_, err = policyctl.New(policyctl.Config{Source: src, Store: st, Registerer: reg})
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("second registration: %v, want AlreadyRegisteredError", err)
	}
}
