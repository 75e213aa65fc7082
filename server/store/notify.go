package store

import "context"

// Notifying is a Store that reports every envoy it changes (enrolled,
// replaced, revoked, flagged, renewed) to Changed, so that a cache of
// envoys — the gRPC server's directory — drops it at once. Changed may be
// set after the Notifying is made, but before it is used.
type Notifying struct {
	Store
	Changed func(uuid string)
}

func (n *Notifying) tell(uuid string) {
	if n.Changed != nil {
		n.Changed(uuid)
	}
}

func (n *Notifying) Enroll(ctx context.Context, p EnrollParams) ([]Envoy, error) {
	replaced, err := n.Store.Enroll(ctx, p)
	for _, e := range replaced {
		n.tell(e.UUID)
	}
	return replaced, err
}

func (n *Notifying) RevokeEnvoys(ctx context.Context, rs []Revocation) ([]Envoy, error) {
	revoked, err := n.Store.RevokeEnvoys(ctx, rs)
	for _, e := range revoked {
		n.tell(e.UUID)
	}
	return revoked, err
}

func (n *Notifying) SetEnvoyFlags(ctx context.Context, uuid string, f EnvoyFlags, a AuditEvent) error {
	err := n.Store.SetEnvoyFlags(ctx, uuid, f, a)
	n.tell(uuid)
	return err
}

func (n *Notifying) RenewCertificate(ctx context.Context, p RenewParams) error {
	err := n.Store.RenewCertificate(ctx, p)
	n.tell(p.UUID)
	return err
}
