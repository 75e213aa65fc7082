package policyctl

import (
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// EventType is what happened to the policy source.
type EventType string

// The events of a Controller.
const (
	// EventEvaluating: a new revision is being judged.
	EventEvaluating EventType = "evaluating"
	// EventApplied: a revision became active (Revoked lists the envoys its
	// revocations revoked).
	EventApplied EventType = "applied"
	// EventRefused: a revision was refused (Kind, Errors).
	EventRefused EventType = "refused"
	// EventWaiting: a valid revision is not applied because applying is
	// suspended or a revision is pinned.
	EventWaiting EventType = "waiting"
	// EventSourceFailed: the source could not be fetched (Reason); sent
	// once when an outage starts.
	EventSourceFailed EventType = "source_failed"
	// EventSourceRecovered: the source was fetched again after failures.
	EventSourceRecovered EventType = "source_recovered"
	// EventSuspended, EventResumed, EventPinned, EventUnpinned: an
	// operator (Actor) changed the policy control.
	EventSuspended EventType = "suspended"
	EventResumed   EventType = "resumed"
	EventPinned    EventType = "pinned"
	EventUnpinned  EventType = "unpinned"
)

// Event is something the controller did or saw, for notifications and
// commit statuses. Events are delivered to Config.OnEvent from the syncing
// goroutine: the receiver must not block.
type Event struct {
	Type    EventType `json:"type"`
	At      time.Time `json:"at"`
	Replica string    `json:"replica"`
	Source  string    `json:"source"`
	// Revision, Name, Subject and Author describe the revision concerned
	// ("" when none).
	Revision string `json:"revision,omitempty"`
	Name     string `json:"name,omitempty"`
	Subject  string `json:"subject,omitempty"`
	Author   string `json:"author,omitempty"`
	// Kind and Errors say why a revision was refused.
	Kind   string              `json:"kind,omitempty"`
	Errors []apiv1.PolicyError `json:"errors,omitempty"`
	// Revoked names the envoys an applied revision revoked
	// ("hostname (uuid)"), at most 50; RevokedCount counts all of them.
	Revoked      []string `json:"revoked,omitempty"`
	RevokedCount int      `json:"revoked_count,omitempty"`
	// Reason is the reason of a source failure or of an operator's action.
	Reason string `json:"reason,omitempty"`
	// Actor is who suspended, resumed, pinned or unpinned.
	Actor string `json:"actor,omitempty"`
}

func (c *Controller) emit(e Event) {
	if c.onEvent == nil {
		return
	}
	e.Replica, e.Source = c.replica, c.src.String()
	if e.At.IsZero() {
		e.At = c.now()
	}
	c.onEvent(e)
}
