package policyctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/store"
)

// Errors of the control operations, for the admin API to translate.
var (
	// ErrNotApplied is returned by Pin for a revision that was never applied.
	ErrNotApplied = errors.New("revision was never applied")
	// ErrNoChange is returned when the control is already in the asked state.
	ErrNoChange = errors.New("nothing to change")
)

// Suspend stops applying new revisions, on every replica sharing the
// store: they are still fetched and judged, and the newest valid one waits
// (Status().Waiting) until Resume. actor is who asked, for the audit log.
func (c *Controller) Suspend(ctx context.Context, reason, actor string) error {
	return c.setControl(ctx, func(ctl *store.PolicyControl) (string, error) {
		if ctl.Suspended {
			return "", fmt.Errorf("applying policy is already suspended (by %s: %s): %w", ctl.SuspendedBy, ctl.SuspendReason, ErrNoChange)
		}
		ctl.Suspended, ctl.SuspendReason, ctl.SuspendedBy, ctl.SuspendedAt = true, reason, actor, c.now()
		return store.AuditPolicySuspended, nil
	}, Event{Type: EventSuspended, Reason: reason, Actor: actor})
}

// Resume ends a suspension; the newest valid revision is applied at once
// (unless a revision is pinned).
func (c *Controller) Resume(ctx context.Context, actor string) error {
	return c.setControl(ctx, func(ctl *store.PolicyControl) (string, error) {
		if !ctl.Suspended {
			return "", fmt.Errorf("applying policy is not suspended: %w", ErrNoChange)
		}
		ctl.Suspended, ctl.SuspendReason, ctl.SuspendedBy, ctl.SuspendedAt = false, "", "", time.Time{}
		return store.AuditPolicyResumed, nil
	}, Event{Type: EventResumed, Actor: actor})
}

// Pin makes revision active — one this database's servers applied before
// (see History) — without a revert commit, and holds it: new revisions are
// judged but not applied until Unpin. Revocations are not undone: an envoy
// revoked since stays revoked.
func (c *Controller) Pin(ctx context.Context, revision, reason, actor string) error {
	if _, err := c.st.GetPolicyHistory(ctx, revision); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("pin %s: %w by a server of this database (vigocli policy history lists the last %d)", revision, ErrNotApplied, store.MaxPolicyHistory)
	} else if err != nil {
		return fmt.Errorf("pin %s: %w", revision, err)
	}
	err := c.setControl(ctx, func(ctl *store.PolicyControl) (string, error) {
		ctl.Pinned, ctl.PinReason, ctl.PinnedBy, ctl.PinnedAt = revision, reason, actor, c.now()
		return store.AuditPolicyPinned, nil
	}, Event{Type: EventPinned, Revision: revision, Reason: reason, Actor: actor})
	if err != nil {
		return err
	}
	return nil
}

// Unpin releases a pin: the branch head is judged and applied at once
// (unless applying is suspended).
func (c *Controller) Unpin(ctx context.Context, actor string) error {
	return c.setControl(ctx, func(ctl *store.PolicyControl) (string, error) {
		if ctl.Pinned == "" {
			return "", fmt.Errorf("no revision is pinned: %w", ErrNoChange)
		}
		ctl.Pinned, ctl.PinReason, ctl.PinnedBy, ctl.PinnedAt = "", "", "", time.Time{}
		return store.AuditPolicyUnpinned, nil
	}, Event{Type: EventUnpinned, Actor: actor})
}

// setControl changes the shared control with change (which returns the
// audit type), stores it with its audit event, and syncs at once so that
// this replica acts on it before the call returns.
func (c *Controller) setControl(ctx context.Context, change func(*store.PolicyControl) (string, error), ev Event) error {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	ctl, err := c.st.GetPolicyControl(ctx)
	if err != nil {
		return err
	}
	typ, err := change(&ctl)
	if err != nil {
		return err
	}
	audit := store.AuditEvent{At: c.now(), Type: typ, Result: "ok", Revision: ev.Revision, Reason: truncate(ev.Reason), Replica: c.replica, Actor: ev.Actor}
	if err := c.st.SetPolicyControl(ctx, ctl, audit); err != nil {
		return err
	}
	c.log.Info("policy control changed", "type", typ, "actor", ev.Actor, "revision", ev.Revision, "reason", ev.Reason)
	c.emit(ev)
	err = c.sync(ctx)
	c.setHealth()
	if err != nil {
		// The change is stored; the sync failing (a fetch error) is shown by
		// the status.
		c.log.Warn("policy sync after a control change failed", "err", err)
	}
	return nil
}

// History returns the revisions applied by this database's servers, newest
// first.
func (c *Controller) History(ctx context.Context, limit int) ([]apiv1.PolicyHistoryEntry, error) {
	hs, err := c.st.ListPolicyHistory(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]apiv1.PolicyHistoryEntry, len(hs))
	for i, h := range hs {
		out[i] = apiv1.PolicyHistoryEntry{Revision: h.ID, Name: h.Name, Subject: h.Subject, Author: h.Author, Signer: h.Signer, AppliedAt: h.AppliedAt, Replica: h.Replica}
	}
	return out, nil
}
