package policyctl_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/vigo-enroll/vigo/gitsync"
	"github.com/vigo-enroll/vigo/server/policyctl"
	"github.com/vigo-enroll/vigo/server/store"
)

// events records the events of a controller.
type events struct {
	mu  sync.Mutex
	all []policyctl.Event
}

func (e *events) add(ev policyctl.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) types() []policyctl.EventType {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []policyctl.EventType
	for _, ev := range e.all {
		out = append(out, ev.Type)
	}
	return out
}

// TestSuspendResumePin drives the shared control through two replicas on
// one store and a restart: a suspension holds new revisions on both, resume
// applies the newest, a pin makes an older revision active on both and
// survives a restart, unpin returns to the branch head. Each step is
// audited with who did it.
func TestSuspendResumePin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, gitsync.VerifyConfig{})
	newReplica := func(name string, ev *events) *policyctl.Controller {
		t.Helper()
		src, err := gitsync.NewGit(gitsync.GitConfig{URL: f.repo.URL(), Path: "policy"})
		if err != nil {
			t.Fatal(err)
		}
		cfg := policyctl.Config{Source: src, Store: f.st, Replica: name}
		if ev != nil {
			cfg.OnEvent = ev.add
		}
		ctl, err := policyctl.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := ctl.Restore(ctx); err != nil {
			t.Fatal(err)
		}
		return ctl
	}
	ev := &events{}
	r1, r2 := newReplica("r1", ev), newReplica("r2", nil)
	sync := func(ctl *policyctl.Controller) {
		t.Helper()
		if _, err := ctl.SyncNow(ctx); err != nil {
			t.Fatal(err)
		}
	}
	active := func(ctl *policyctl.Controller) string { return ctl.Active().Revision() }

	a := f.push(t, validPolicy, "a")
	sync(r1)
	sync(r2)
	if err := r1.Suspend(ctx, "incident 42", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := r1.Suspend(ctx, "again", "bob"); !errors.Is(err, policyctl.ErrNoChange) {
		t.Errorf("second Suspend = %v, want ErrNoChange", err)
	}
	b := f.push(t, validPolicy2, "b")
	sync(r1)
	sync(r2)
	for _, ctl := range []*policyctl.Controller{r1, r2} {
		st := ctl.Status()
		if active(ctl) != a || st.Waiting == nil || st.Waiting.Revision != b || st.Suspended == nil || st.Suspended.By != "alice" {
			t.Fatalf("suspended: active %s, status %+v", active(ctl), st)
		}
		if st.Conditions[0].Reason != "Suspended" || st.Conditions[0].Status != "False" || !st.Healthy {
			t.Errorf("suspended: Ready = %+v, healthy %v", st.Conditions[0], st.Healthy)
		}
	}

	if err := r1.Resume(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if active(r1) != b {
		t.Errorf("after resume r1 active %s, want %s at once", active(r1), b)
	}
	sync(r2)
	if active(r2) != b {
		t.Errorf("after resume r2 active %s, want %s at its next sync", active(r2), b)
	}

	if err := r2.Pin(ctx, a, "rollback", "bob"); err != nil {
		t.Fatal(err)
	}
	sync(r1)
	for _, ctl := range []*policyctl.Controller{r1, r2} {
		if active(ctl) != a || ctl.Status().Pinned == nil || ctl.Status().Pinned.Revision != a {
			t.Errorf("pinned: active %s, status %+v", active(ctl), ctl.Status().Pinned)
		}
	}
	c := f.push(t, validPolicy+"// c\n", "c")
	sync(r1)
	if active(r1) != a || r1.Status().Waiting == nil || r1.Status().Waiting.Revision != c {
		t.Errorf("pinned, new commit: active %s waiting %+v", active(r1), r1.Status().Waiting)
	}
	r3 := newReplica("r1", nil) // r1 restarted
	if active(r3) != a || r3.Status().Pinned == nil {
		t.Errorf("restart while pinned: active %s pinned %+v", active(r3), r3.Status().Pinned)
	}
	if err := r3.Unpin(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if active(r3) != c {
		t.Errorf("after unpin: active %s, want the head %s", active(r3), c)
	}
	if err := r3.Pin(ctx, "0123456789abcdef", "", "bob"); !errors.Is(err, policyctl.ErrNotApplied) {
		t.Errorf("Pin(unknown) = %v, want ErrNotApplied", err)
	}

	var got []string
	for _, e := range f.audit(t, store.AuditPolicySuspended) {
		got = append(got, e.Actor+":"+e.Reason)
	}
	for _, typ := range []string{store.AuditPolicyResumed, store.AuditPolicyPinned, store.AuditPolicyUnpinned} {
		for _, e := range f.audit(t, typ) {
			got = append(got, e.Type+" by "+e.Actor+" "+e.Revision)
		}
	}
	want := []string{"alice:incident 42", "policy.resumed by alice ", "policy.pinned by bob " + a, "policy.unpinned by bob "}
	if len(got) != len(want) {
		t.Fatalf("control audit = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("control audit[%d] = %q, want %q", i, got[i], want[i])
		}
	}
	wantEvents := []policyctl.EventType{
		policyctl.EventEvaluating, policyctl.EventApplied, // a
		policyctl.EventSuspended,
		policyctl.EventEvaluating, policyctl.EventWaiting, // b
		policyctl.EventResumed, policyctl.EventEvaluating, policyctl.EventApplied, // b applied
		policyctl.EventEvaluating, policyctl.EventWaiting, // c while pinned (r1 saw the pin at its sync)
	}
	if got := ev.types(); len(got) != len(wantEvents) {
		t.Errorf("r1 events = %v, want %v", got, wantEvents)
	} else {
		for i := range wantEvents {
			if got[i] != wantEvents[i] {
				t.Errorf("r1 events = %v, want %v", got, wantEvents)
				break
			}
		}
	}
}
