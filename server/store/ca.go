package store

import (
	"fmt"
	"time"
)

// CA rotation phases (CAState.Phase), in the order a rotation goes
// through them: prepare, activate, finish.
const (
	// CAPhaseIdle: one CA, Current, trusted and signing.
	CAPhaseIdle = ""
	// CAPhasePrepared: Next exists and is trusted (agents receive both CAs
	// at check-in); Current still signs.
	CAPhasePrepared = "prepared"
	// CAPhaseActive: Next signs envoy and server certificates; Current is
	// still trusted, so envoys holding its certificates keep checking in
	// while they renew onto Next.
	CAPhaseActive = "active"
)

// CA rotation audit event types.
const (
	AuditCAPrepared   = "ca.prepared"
	AuditCAActivated  = "ca.activated"
	AuditCAFinished   = "ca.finished"
	AuditCARolledBack = "ca.rolled_back"
)

// CAState is the CA rotation state that all replicas sharing the database
// follow. It holds certificates only: the CA keys stay in files in each
// replica's data folder, as the CA key always has.
type CAState struct {
	// Phase is one of CAPhaseIdle, CAPhasePrepared, CAPhaseActive.
	Phase string
	// Current is the CA certificate (PEM) in use before the rotation.
	Current []byte
	// Next is the new CA certificate (PEM), in the prepared and active
	// phases only.
	Next []byte
	// Version counts the changes: 0 when never set, then 1, 2, …
	Version int64
	// UpdatedAt is when it was last changed.
	UpdatedAt time.Time
}

// CheckSerialPrefix checks that prefix is lower-case hex digits only.
func CheckSerialPrefix(prefix string) error {
	for _, r := range prefix {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return fmt.Errorf("serial prefix %q: not lower-case hex", prefix)
		}
	}
	return nil
}
