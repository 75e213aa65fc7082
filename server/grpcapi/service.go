package grpcapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/agentbuild"
	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/store"
)

// maxField bounds each string field of a check-in.
const maxField = 256

type service struct {
	agentpb.UnimplementedAgentServiceServer
	s *Server
}

func (v *service) Checkin(ctx context.Context, req *agentpb.CheckinRequest) (*agentpb.CheckinResponse, error) {
	s := v.s
	id, ok := EnvoyFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no envoy identity")
	}
	// Sizes first, so that no refusal below repeats a large value.
	for _, f := range []string{req.GetUuid(), req.GetHostname(), req.GetAgentVersion(), req.GetOs(), req.GetArch()} {
		if len(f) > maxField {
			return nil, status.Errorf(codes.InvalidArgument, "check-in field longer than %d bytes", maxField)
		}
	}
	if req.GetUuid() != id.UUID {
		return nil, status.Errorf(codes.Unauthenticated, "check-in for envoy %q over the connection of envoy %s", req.GetUuid(), id.UUID)
	}
	if len(req.GetNonce()) != agentpb.NonceSize {
		return nil, status.Errorf(codes.InvalidArgument, "check-in nonce must be %d bytes", agentpb.NonceSize)
	}
	if len(req.GetSignature()) != ed25519.SignatureSize {
		return nil, status.Errorf(codes.InvalidArgument, "check-in signature must be %d bytes", ed25519.SignatureSize)
	}
	now := s.now()
	ts := time.Unix(0, req.GetTimestampUnixNano())
	if skew := now.Sub(ts).Abs(); skew > s.cfg.MaxClockSkew {
		return nil, status.Errorf(codes.Unauthenticated, "check-in timestamp is %s off the server's clock (at most %s allowed); fix the envoy's clock",
			skew.Round(time.Second), s.cfg.MaxClockSkew)
	}
	if id.entry.pub == nil {
		return nil, internal(codes.Internal, "internal error", fmt.Errorf("envoy %s has no usable public key", id.UUID))
	}
	if !ed25519.Verify(id.entry.pub, req.SigningBytes(), req.GetSignature()) {
		return nil, status.Errorf(codes.Unauthenticated, "check-in signature does not verify with the enrolled key of envoy %s", id.UUID)
	}
	// The hostname is signed: it must be the one enrolled, or the
	// signed statement would say something the server never checked.
	// (Comparing rather than dropping the field keeps the wire format
	// and the signed bytes of deployed agents, which send the enrolled
	// hostname.) Not repeated in the refusal: it is the client's.
	if h, err := policy.NormalizeHostname(req.GetHostname()); err != nil || h != id.Hostname {
		return nil, status.Errorf(codes.InvalidArgument, "check-in hostname is not the enrolled hostname %q of envoy %s", id.Hostname, id.UUID)
	}
	// Replays across restarts: the nonces in memory are lost with the
	// process, so a check-in must also be newer than the newest one
	// recorded in the store (with the batched check-ins) when this
	// process read the envoy. Compared in milliseconds, the store's
	// precision. Check-ins accepted in the last FlushInterval before a
	// crash are not recorded yet: a graceful stop writes them. An agent
	// signs with its own clock, so only an envoy whose clock went back
	// across a restart waits here, until its clock passes the record.
	if ts.UnixMilli() <= id.entry.checkinFloor.UnixMilli() {
		return nil, status.Errorf(codes.Unauthenticated, "check-in is not newer than the last one recorded for envoy %s at %s (replayed request?); send a new one",
			id.UUID, id.entry.checkinFloor.UTC().Format(time.RFC3339Nano))
	}
	// The nonce is remembered only after the signature verified, so that
	// only the envoy itself can add to its own share.
	switch s.guard.add(id.UUID, [16]byte(req.GetNonce()), ts, ts.Add(s.cfg.MaxClockSkew), now) {
	case nonceReplayed:
		return nil, status.Error(codes.Unauthenticated, "check-in nonce was already used (replayed request)")
	case nonceStale:
		return nil, status.Errorf(codes.Unauthenticated, "check-in is older than the last %d accepted from envoy %s (replayed request?); send a new one", maxNoncesPerEnvoy, id.UUID)
	}
	if s.cfg.SharedNonces {
		// Several replicas: the in-memory cache only sees this replica's
		// check-ins, so the nonce is also recorded where all replicas see
		// it (one small write per check-in, the price of replay
		// protection across replicas).
		seen, err := s.cfg.Store.SeenNonce(ctx, id.UUID, req.GetNonce(), ts.Add(s.cfg.MaxClockSkew))
		if err != nil {
			s.logger.Error("record check-in nonce", "envoy_uuid", id.UUID, "err", err)
			return nil, status.Error(codes.Unavailable, "replay check unavailable; retry later")
		}
		if seen {
			return nil, status.Error(codes.Unauthenticated, "check-in nonce was already used (replayed request)")
		}
	}
	s.batch.record(store.Checkin{UUID: id.UUID, At: now, AgentVersion: req.GetAgentVersion(), Addr: peerIP(ctx), Signed: ts})

	resp := &agentpb.CheckinResponse{
		Uuid:               id.UUID,
		RequestNonce:       req.GetNonce(),
		ServerTimeUnixNano: now.UnixNano(),
		NextCheckinMillis:  s.cfg.Interval.Milliseconds(),
		Actions:            s.actions(id, req, now),
	}
	resp.Signature = ed25519.Sign(s.cfg.SigningKey, resp.SigningBytes())
	// The trust bundle goes only to an agent whose bundle differs: an
	// agent that sends a digest, or any agent during a CA rotation (an
	// agent built before bundles sends none, and ignores the field).
	if b := s.trustBundle.Load(); !bytes.Equal(req.GetTrustBundleSha256(), b.digest) && (len(req.GetTrustBundleSha256()) > 0 || len(b.ders) > 1) {
		resp.SignTrustBundle(s.cfg.SigningKey, b.ders)
	}
	return resp, nil
}

// actions returns what the envoy should do next.
func (s *Server) actions(id Envoy, req *agentpb.CheckinRequest, now time.Time) []*agentpb.Action {
	var as []*agentpb.Action
	if id.entry.flags.Rebootstrap {
		// A rebootstrap also brings the agent to the build served for its
		// platform ("updates can be triggered remotely via vigocli envoys
		// rebootstrap"): the update comes first, so that the new identity
		// is registered by the new agent. A new identity makes renewal moot.
		if s.cfg.AgentVersion != nil {
			want := id.entry.flags.UpdateVersion
			if want == "" && s.cfg.TargetVersion != nil {
				want = s.cfg.TargetVersion()
			}
			if version, sum, ok := s.cfg.AgentVersion(req.GetOs(), req.GetArch()); ok && version != req.GetAgentVersion() && (want == "" || want == version) {
				as = append(as, &agentpb.Action{Type: agentpb.ActionType_ACTION_TYPE_UPDATE, Version: version, Sha256: sum,
					Reason: fmt.Sprintf("rebootstrap: agent %s is served for %s/%s", version, req.GetOs(), req.GetArch())})
			}
		}
		return append(as, &agentpb.Action{Type: agentpb.ActionType_ACTION_TYPE_REBOOTSTRAP, Reason: "rebootstrap requested by an operator"})
	}
	c := id.Certificate
	if life := c.NotAfter.Sub(c.NotBefore); !now.Before(c.NotBefore.Add(life * 2 / 3)) {
		as = append(as, &agentpb.Action{Type: agentpb.ActionType_ACTION_TYPE_RENEW,
			Reason: fmt.Sprintf("certificate expires at %s", c.NotAfter.UTC().Format(time.RFC3339))})
	} else if !s.cfg.CA.IssuedBySigner(c) {
		// A CA rotation was activated (or rolled back): the envoy moves
		// onto the CA that signs now, so that the other can be dropped.
		as = append(as, &agentpb.Action{Type: agentpb.ActionType_ACTION_TYPE_RENEW,
			Reason: "CA rotation: the certificate is from the CA being retired"})
	}
	// The version this envoy should run: its own update flag (vigocli envoys
	// update, with the operator's consent to a downgrade or not), else the
	// fleet-wide agent.version. It is offered only when the server serves
	// exactly that build for the envoy's platform, and, without consent,
	// only when it is newer than the running agent: the agent refuses a
	// downgrade (or versions it cannot order) without consent, so offering
	// it would only fail every check-in.
	want, allow := id.entry.flags.UpdateVersion, id.entry.flags.UpdateAllowDowngrade
	if want == "" && s.cfg.TargetVersion != nil {
		want, allow = s.cfg.TargetVersion(), false
	}
	if c, ordered := agentbuild.CompareVersions(want, req.GetAgentVersion()); !allow && (!ordered || c < 0) {
		want = ""
	}
	if want != "" && want != req.GetAgentVersion() && s.cfg.AgentVersion != nil {
		if version, sum, ok := s.cfg.AgentVersion(req.GetOs(), req.GetArch()); ok && version == want {
			as = append(as, &agentpb.Action{Type: agentpb.ActionType_ACTION_TYPE_UPDATE, Version: version, Sha256: sum, AllowDowngrade: allow,
				Reason: fmt.Sprintf("agent %s is served for %s/%s", version, req.GetOs(), req.GetArch())})
		}
	}
	return as
}

func (v *service) RenewCertificate(ctx context.Context, req *agentpb.RenewCertificateRequest) (*agentpb.RenewCertificateResponse, error) {
	s := v.s
	id, ok := EnvoyFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no envoy identity")
	}
	now := s.now()
	// Renewal writes to the store: an envoy may renew only in the second
	// half of its certificate's life (agents do at 2/3), so that a
	// misbehaving one cannot turn it into a write load. A compromised key
	// calls for rebootstrap or revocation, not renewal.
	cur := id.Certificate
	// A certificate from a CA being retired (CA rotation) may be renewed
	// at once: the server asked for it.
	if due := cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore) / 2); now.Before(due) && s.cfg.CA.IssuedBySigner(cur) {
		return nil, status.Errorf(codes.FailedPrecondition, "certificate %s of envoy %s is not due for renewal before %s",
			id.Serial, id.UUID, due.UTC().Format(time.RFC3339))
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "parse CSR: "+err.Error())
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Error(codes.InvalidArgument, "CSR signature: "+err.Error())
	}
	pub, ok := csr.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, status.Error(codes.InvalidArgument, "CSR key is not Ed25519")
	}
	life := id.Certificate.NotAfter.Sub(id.Certificate.NotBefore)
	if s.cfg.CertValidity != nil {
		if v := s.cfg.CertValidity(); v > 0 {
			life = v
		}
	}
	cert, err := s.cfg.CA.SignEnvoy(ca.EnvoyParams{PublicKey: pub, Hostname: id.Hostname, UUID: id.UUID, NotAfter: now.Add(life)})
	if err != nil {
		return nil, internal(codes.Internal, "internal error", err)
	}
	newKey := !pub.Equal(id.entry.pub)
	p := store.RenewParams{
		UUID: id.UUID, OldSerial: id.Serial, NewSerial: ca.SerialHex(cert), NotAfter: cert.NotAfter,
		Audit: store.AuditEvent{
			At: now, Type: store.AuditEnvoyRenewed, Result: "ok", Hostname: id.Hostname,
			SourceIP: peerIP(ctx), EnvoyUUID: id.UUID, Replica: s.cfg.Replica,
			Details: map[string]string{"old_serial": id.Serial, "new_serial": ca.SerialHex(cert), "new_key": fmt.Sprint(newKey)},
		},
	}
	if newKey {
		p.PublicKey = pub
	}
	switch err := s.cfg.Store.RenewCertificate(ctx, p); {
	case errors.Is(err, store.ErrConflict):
		s.dir.invalidate(id.UUID)
		return nil, status.Errorf(codes.FailedPrecondition, "certificate %s of envoy %s was already renewed", id.Serial, id.UUID)
	case errors.Is(err, store.ErrEnvoyRevoked):
		s.dir.invalidate(id.UUID)
		return nil, agentpb.RefusalEnvoyRevoked.Status(codes.PermissionDenied, fmt.Sprintf("envoy %s is revoked", id.UUID)).Err()
	case err != nil:
		return nil, internal(codes.Internal, "internal error", err)
	}
	s.dir.invalidate(id.UUID)
	s.logger.Info("certificate renewed", "envoy_uuid", id.UUID, "hostname", id.Hostname, "new_key", newKey)
	return &agentpb.RenewCertificateResponse{Certificate: cert.Raw, Ca: caOf(s.cfg.CA, cert).Raw}, nil
}

// caOf returns the trusted CA that issued cert (the signing CA when none
// matches).
func caOf(c *ca.CA, cert *x509.Certificate) *x509.Certificate {
	for _, t := range c.Trusted() {
		if bytes.Equal(cert.RawIssuer, t.RawSubject) && cert.CheckSignatureFrom(t) == nil {
			return t
		}
	}
	return c.Certificate()
}
