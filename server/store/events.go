package store

import "time"

// The audit events every backend writes for its own state changes, built
// here so that both backends record exactly the same thing.

// ReplacedReason is the revocation reason of an envoy replaced by p:
// p.ReplaceReason, by default "replaced".
func (p EnrollParams) ReplacedReason() string {
	if p.ReplaceReason != "" {
		return p.ReplaceReason
	}
	return "replaced"
}

// ReplacedEvent is the "envoy.revoked" event of an envoy replaced by a
// forced enrollment of the envoy with UUID by, registered with reg.
func ReplacedEvent(old Envoy, by, reason string, at time.Time, reg AuditEvent) AuditEvent {
	return AuditEvent{
		At:        at,
		Type:      AuditEnvoyRevoked,
		Result:    "ok",
		Hostname:  old.Hostname,
		SourceIP:  reg.SourceIP,
		Revision:  reg.Revision,
		EnvoyUUID: old.UUID,
		Reason:    reason,
		Replica:   reg.Replica,
		Details:   map[string]string{"replaced_by": by},
	}
}

// RevokedEvent is the "envoy.revoked" event of an envoy revoked by r at at.
func RevokedEvent(e Envoy, r Revocation, at time.Time) AuditEvent {
	return AuditEvent{
		At:        at,
		Type:      AuditEnvoyRevoked,
		Result:    "ok",
		Hostname:  e.Hostname,
		Revision:  r.Revision,
		EnvoyUUID: e.UUID,
		Reason:    r.Reason,
		Replica:   r.Replica,
		Actor:     r.Actor,
	}
}
