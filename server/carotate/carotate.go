// Package carotate rotates the server's CA without re-enrolling the fleet,
// in phases shared by every replica through the store (store.CAState):
//
//   - prepare creates the next CA (its key beside the CA key, 0600) and
//     makes it trusted: agents receive both CAs at check-in and trust both.
//   - activate makes the next CA sign new and renewed envoy certificates
//     and the server certificates; certificates from the previous CA are
//     still accepted, and their envoys are asked to renew at once.
//   - finish drops the previous CA, once no active envoy holds a
//     certificate from it (or with force).
//   - rollback goes back one phase: from active to prepared, from prepared
//     to a single CA.
//
// Each step is audited and idempotent: repeating it does nothing and says
// so. A step out of order is refused with an error saying what to run.
// Replicas follow the state with Watch.
package carotate

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/store"
)

// ErrOutOfOrder is returned for a step that the current phase does not
// allow (activate before prepare, finish before activate, prepare during
// a rotation).
var ErrOutOfOrder = errors.New("CA rotation step out of order")

// ErrEnvoysRemain is returned by Finish when active envoys still hold a
// certificate from the CA being dropped, and by Activate when active
// envoys have not checked in since the next CA was handed out (they would
// not trust the server's new certificate).
var ErrEnvoysRemain = errors.New("envoys are not ready for this step")

// Config configures a Rotator.
type Config struct {
	// Store holds the shared state (required).
	Store store.Store
	// CA is this server's CA (required).
	CA *ca.CA
	// Replica and Actor name who acts, in audit events.
	Replica, Actor string
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// ApplyDelay is how long servers take to apply a step
	// (server.replica_refresh; default 10s): an envoy has the next CA
	// once it checked in that long after prepare.
	ApplyDelay time.Duration
}

// Rotator runs the rotation steps and applies the shared state to the CA.
type Rotator struct {
	cfg Config
	log *slog.Logger
}

// New returns a Rotator.
func New(cfg Config) (*Rotator, error) {
	if cfg.Store == nil || cfg.CA == nil {
		return nil, errors.New("new CA rotator: store and CA are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ApplyDelay <= 0 {
		cfg.ApplyDelay = 10 * time.Second
	}
	return &Rotator{cfg: cfg, log: cfg.Logger.With("component", "carotate")}, nil
}

// CAInfo describes one CA of the rotation.
type CAInfo struct {
	// Role is "current" (the CA before the rotation) or "next".
	Role        string
	Certificate *x509.Certificate
	Fingerprint string
	// Signing tells whether it signs certificates now.
	Signing bool
	// Envoys is how many active envoys hold a certificate from it.
	Envoys int
}

// Status is the rotation state as an operator sees it.
type Status struct {
	Phase     string // ca.PhaseIdle, ca.PhasePrepared or ca.PhaseActive
	CAs       []CAInfo
	Version   int64
	UpdatedAt time.Time
	// NotYetTrusting, in the prepared phase, is how many active envoys
	// have not checked in since every server hands out the next CA:
	// activate refuses while it is not zero.
	NotYetTrusting int
}

// Result says what a step did.
type Result struct {
	// Changed is false when the step had already been done.
	Changed bool
	// Message says what happened, for the operator.
	Message string
	// Warning is set when the step was forced past a safety check.
	Warning string
}

// state is the store's state with parsed certificates; a state never set
// is the idle phase with this server's CA.
type state struct {
	store.CAState
	current, next *x509.Certificate
}

func (r *Rotator) load(ctx context.Context) (state, error) {
	st, err := r.cfg.Store.GetCAState(ctx)
	if err != nil {
		return state{}, err
	}
	s := state{CAState: st}
	if st.Version == 0 {
		s.current = r.cfg.CA.Certificate()
		s.Current = ca.EncodeCertPEM(s.current)
		return s, nil
	}
	if s.current, err = ca.ParseCertPEM(st.Current); err != nil {
		return state{}, fmt.Errorf("CA rotation state: current CA: %w", err)
	}
	if len(st.Next) > 0 {
		if s.next, err = ca.ParseCertPEM(st.Next); err != nil {
			return state{}, fmt.Errorf("CA rotation state: next CA: %w", err)
		}
	}
	return s, nil
}

// Status returns the phase, the CAs and how many active envoys hold a
// certificate from each.
func (r *Rotator) Status(ctx context.Context) (Status, error) {
	s, err := r.load(ctx)
	if err != nil {
		return Status{}, err
	}
	out := Status{Phase: s.Phase, Version: s.Version, UpdatedAt: s.UpdatedAt}
	total, err := r.cfg.Store.CountActiveEnvoysBySerialPrefix(ctx, "")
	if err != nil {
		return Status{}, err
	}
	onNext := 0
	if s.next != nil {
		if onNext, err = r.cfg.Store.CountActiveEnvoysBySerialPrefix(ctx, ca.SerialPrefix(s.next)); err != nil {
			return Status{}, err
		}
	}
	out.CAs = append(out.CAs, CAInfo{Role: "current", Certificate: s.current, Fingerprint: ca.Fingerprint(s.current),
		Signing: s.Phase != ca.PhaseActive, Envoys: total - onNext})
	if s.next != nil {
		out.CAs = append(out.CAs, CAInfo{Role: "next", Certificate: s.next, Fingerprint: ca.Fingerprint(s.next),
			Signing: s.Phase == ca.PhaseActive, Envoys: onNext})
	}
	if s.Phase == ca.PhasePrepared {
		if out.NotYetTrusting, err = r.notYetTrusting(ctx, s); err != nil {
			return Status{}, err
		}
	}
	return out, nil
}

// notYetTrusting counts the active envoys not seen since every server
// hands out the next CA (ApplyDelay after prepare).
func (r *Rotator) notYetTrusting(ctx context.Context, s state) (int, error) {
	return r.cfg.Store.CountEnvoys(ctx, store.EnvoyQuery{Status: store.StatusActive, SeenBefore: s.UpdatedAt.Add(r.cfg.ApplyDelay)})
}

func (r *Rotator) audit(typ string, details map[string]string) store.AuditEvent {
	return store.AuditEvent{At: r.cfg.Now(), Type: typ, Result: "ok", Replica: r.cfg.Replica, Actor: r.cfg.Actor, Details: details}
}

// set writes the next state (compare-and-swap on the version) and applies
// it to this server's CA.
func (r *Rotator) set(ctx context.Context, prev state, next store.CAState, ev store.AuditEvent) error {
	next.UpdatedAt = r.cfg.Now()
	if err := r.cfg.Store.SetCAState(ctx, prev.Version, next, ev); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("the CA rotation state was changed concurrently (another replica or command): look at `vigosrv ca status` and run the step again: %w", err)
		}
		return err
	}
	_, err := r.Sync(ctx)
	return err
}

// Prepare creates the next CA and makes it trusted.
func (r *Rotator) Prepare(ctx context.Context) (Result, error) {
	s, err := r.load(ctx)
	if err != nil {
		return Result{}, err
	}
	switch s.Phase {
	case ca.PhasePrepared:
		return Result{Message: fmt.Sprintf("already prepared: the next CA %s is trusted; run `vigosrv ca rotate activate` next", ca.Fingerprint(s.next))}, nil
	case ca.PhaseActive:
		return Result{}, fmt.Errorf("%w: a rotation is active (CA %s signs); finish it (`vigosrv ca rotate finish`) or roll it back before preparing another", ErrOutOfOrder, ca.Fingerprint(s.next))
	}
	next, err := r.cfg.CA.CreateNext()
	if err != nil {
		return Result{}, err
	}
	fp := ca.Fingerprint(next)
	err = r.set(ctx, s, store.CAState{Phase: ca.PhasePrepared, Current: s.Current, Next: ca.EncodeCertPEM(next)},
		r.audit(store.AuditCAPrepared, map[string]string{"current": ca.Fingerprint(s.current), "next": fp}))
	if err != nil {
		certFile, keyFile := r.cfg.CA.Config().RotationPaths(fp)
		_ = os.Remove(keyFile)
		_ = os.Remove(certFile)
		return Result{}, err
	}
	certFile, keyFile := r.cfg.CA.Config().RotationPaths(fp)
	r.log.Info("CA rotation prepared", "next", fp)
	return Result{Changed: true, Message: fmt.Sprintf("prepared: the next CA %s is trusted and handed to agents at their next check-in\n"+
		"its key is %s (certificate %s): back it up now, and copy both to every other replica's data folder before activating;\n"+
		"once every agent has checked in (one check-in interval), run `vigosrv ca rotate activate`", fp, keyFile, certFile)}, nil
}

// Activate makes the next CA sign. Without force it refuses while active
// envoys have not checked in since the next CA was handed out
// (ErrEnvoysRemain): their agents do not trust it yet, and would refuse
// the server's new certificate.
func (r *Rotator) Activate(ctx context.Context, force bool) (Result, error) {
	s, err := r.load(ctx)
	if err != nil {
		return Result{}, err
	}
	switch s.Phase {
	case ca.PhaseIdle:
		return Result{}, fmt.Errorf("%w: no rotation is prepared: run `vigosrv ca rotate prepare` first", ErrOutOfOrder)
	case ca.PhaseActive:
		return Result{Message: fmt.Sprintf("already active: the CA %s signs; run `vigosrv ca rotate finish` once every envoy renewed (see `vigosrv ca status`)", ca.Fingerprint(s.next))}, nil
	}
	fp := ca.Fingerprint(s.next)
	if _, keyFile := r.cfg.CA.Config().RotationPaths(fp); !fileExists(keyFile) {
		return Result{}, fmt.Errorf("activate: the key of the next CA %s is not in this data folder (%s): copy it (and its certificate) from the replica that prepared the rotation", fp, keyFile)
	}
	since := s.UpdatedAt.Add(r.cfg.ApplyDelay)
	behind, err := r.notYetTrusting(ctx, s)
	if err != nil {
		return Result{}, err
	}
	var res Result
	if behind > 0 {
		if !force {
			return Result{}, fmt.Errorf("%w: %d active envoys have not checked in since %s, when every server was handing out the next CA: their agents do not trust it yet and would refuse the server's new certificate; "+
				"wait for their next check-in (`vigocli envoys list` shows when each was last seen; revoke those that are gone), or activate anyway with --force (those agents must then register again)",
				ErrEnvoysRemain, behind, since.UTC().Format(time.RFC3339))
		}
		res.Warning = fmt.Sprintf("forced: %d active envoys have not received the next CA and will refuse the server's certificate; they must register again", behind)
	}
	err = r.set(ctx, s, store.CAState{Phase: ca.PhaseActive, Current: s.Current, Next: s.Next},
		r.audit(store.AuditCAActivated, map[string]string{"current": ca.Fingerprint(s.current), "next": fp, "forced": fmt.Sprint(force), "envoys_behind": fmt.Sprint(behind)}))
	if err != nil {
		return Result{}, err
	}
	r.log.Info("CA rotation activated", "next", fp)
	res.Changed = true
	res.Message = fmt.Sprintf("activated: the CA %s signs new and renewed certificates and the server certificates;\n"+
		"envoys holding a certificate from %s renew at their next check-in; run `vigosrv ca rotate finish` once `vigosrv ca status` shows none left", fp, ca.Fingerprint(s.current))
	return res, nil
}

// Finish drops the previous CA. Without force it refuses while active
// envoys hold a certificate from it (ErrEnvoysRemain).
func (r *Rotator) Finish(ctx context.Context, force bool) (Result, error) {
	s, err := r.load(ctx)
	if err != nil {
		return Result{}, err
	}
	switch s.Phase {
	case ca.PhaseIdle:
		return Result{Message: fmt.Sprintf("no rotation in progress: the CA %s alone is trusted", ca.Fingerprint(s.current))}, nil
	case ca.PhasePrepared:
		return Result{}, fmt.Errorf("%w: the rotation is prepared, not active: run `vigosrv ca rotate activate` first (or `rollback` to abandon it)", ErrOutOfOrder)
	}
	st, err := r.Status(ctx)
	if err != nil {
		return Result{}, err
	}
	old := st.CAs[0]
	var res Result
	if old.Envoys > 0 {
		if !force {
			return Result{}, fmt.Errorf("%w: %d active envoys still hold a certificate from the old CA %s; their agents renew at their next check-in (`vigo run`, or `vigo run --once` on the host); "+
				"an envoy that never checks in again can be revoked (`vigocli envoys revoke`); or drop the old CA anyway with --force (those envoys can then no longer check in and must register again)",
				ErrEnvoysRemain, old.Envoys, old.Fingerprint)
		}
		res.Warning = fmt.Sprintf("forced: %d active envoys hold a certificate from the old CA %s and can no longer check in; they must register again", old.Envoys, old.Fingerprint)
	}
	fp := ca.Fingerprint(s.next)
	err = r.set(ctx, s, store.CAState{Phase: ca.PhaseIdle, Current: s.Next},
		r.audit(store.AuditCAFinished, map[string]string{"dropped": old.Fingerprint, "current": fp, "forced": fmt.Sprint(force), "envoys_left": fmt.Sprint(old.Envoys)}))
	if err != nil {
		return Result{}, err
	}
	r.log.Info("CA rotation finished", "current", fp, "dropped", old.Fingerprint)
	res.Changed = true
	res.Message = fmt.Sprintf("finished: the CA %s alone is trusted; the old CA %s is no longer accepted\n"+
		"this data folder's CA files now hold the new CA (the old one is kept beside them as ca-%s.*: delete it once no backup needs it); take a new backup (`vigosrv backup`)",
		fp, old.Fingerprint, old.Fingerprint[:16])
	return res, nil
}

// Rollback goes back one phase.
func (r *Rotator) Rollback(ctx context.Context) (Result, error) {
	s, err := r.load(ctx)
	if err != nil {
		return Result{}, err
	}
	switch s.Phase {
	case ca.PhaseIdle:
		return Result{Message: "no rotation in progress: nothing to roll back"}, nil
	case ca.PhasePrepared:
		fp := ca.Fingerprint(s.next)
		err = r.set(ctx, s, store.CAState{Phase: ca.PhaseIdle, Current: s.Current},
			r.audit(store.AuditCARolledBack, map[string]string{"from": ca.PhasePrepared, "dropped": fp}))
		if err != nil {
			return Result{}, err
		}
		return Result{Changed: true, Message: fmt.Sprintf("rolled back: the next CA %s is no longer trusted; the CA %s alone signs and is trusted", fp, ca.Fingerprint(s.current))}, nil
	}
	err = r.set(ctx, s, store.CAState{Phase: ca.PhasePrepared, Current: s.Current, Next: s.Next},
		r.audit(store.AuditCARolledBack, map[string]string{"from": ca.PhaseActive, "next": ca.Fingerprint(s.next)}))
	if err != nil {
		return Result{}, err
	}
	return Result{Changed: true, Message: fmt.Sprintf("rolled back to prepared: the CA %s signs again, both CAs stay trusted; envoys renewed onto %s renew back at their next check-in; run `rollback` again to drop the next CA",
		ca.Fingerprint(s.current), ca.Fingerprint(s.next))}, nil
}

// Sync applies the shared state to this server's CA and reports whether
// it changed. After a finished rotation it also installs the new CA in
// the configured CA files. During a rotation, a missing key of the CA
// that should sign is logged (the server keeps signing with the CA it
// has) and not returned; after a finished one it is an error.
func (r *Rotator) Sync(ctx context.Context) (bool, error) {
	s, err := r.load(ctx)
	if err != nil {
		return false, err
	}
	changed, err := r.cfg.CA.Apply(s.Phase, s.current, s.next)
	if errors.Is(err, ca.ErrNoKey) && s.Phase == ca.PhaseIdle {
		return false, fmt.Errorf("the CA rotation finished but this replica lacks the key of the CA %s: copy ca-%s.key and .pem from the replica that prepared the rotation into the CA folder: %w",
			ca.Fingerprint(s.current), ca.Fingerprint(s.current)[:16], err)
	}
	if errors.Is(err, ca.ErrNoKey) {
		r.log.Error("this replica cannot sign with the CA the rotation state names: copy its key file from the replica that prepared the rotation", "err", err)
	} else if err != nil {
		return false, err
	}
	if s.Phase == ca.PhaseIdle && err == nil {
		installed, err := r.cfg.CA.Install()
		if err != nil {
			return changed, fmt.Errorf("install the new CA: %w", err)
		}
		if installed {
			r.log.Info("installed the CA of the finished rotation in the CA files", "fingerprint", ca.Fingerprint(s.current))
		}
	}
	if changed {
		r.log.Info("CA rotation state applied", "phase", phaseName(s.Phase), "signing", r.cfg.CA.Fingerprint())
	}
	return changed, nil
}

// Watch calls Sync every interval (default 10s) until ctx is done, and
// onChange after each change.
func (r *Rotator) Watch(ctx context.Context, interval time.Duration, onChange func()) {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := r.Sync(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error("follow the CA rotation state", "err", err)
			}
			continue
		}
		if changed && onChange != nil {
			onChange()
		}
	}
}

func phaseName(p string) string {
	if p == ca.PhaseIdle {
		return "idle"
	}
	return p
}

// PhaseName returns the phase as printed: "idle" for ca.PhaseIdle.
func PhaseName(p string) string { return phaseName(p) }

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
