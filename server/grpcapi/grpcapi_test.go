package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/agent/update"
	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/grpcapi/grpcapitest"
	"github.com/vigo-enroll/vigo/server/store"
)

func actionTypes(as []*agentpb.Action) []agentpb.ActionType {
	var ts []agentpb.ActionType
	for _, a := range as {
		ts = append(ts, a.GetType())
	}
	return ts
}

// TestLifecycle runs a real agent against a real server: check-in, renew
// (old serial refused at the handshake), revocation from policy (refused by
// the interceptor on the open connection, with the reason, and at the
// handshake on a new one).
func TestLifecycle(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	ctx := context.Background()
	now := time.Now()
	// A certificate past 2/3 of its life: the server asks for renewal.
	v := e.Enroll("web1.example.com", now.Add(-3*time.Hour), now.Add(time.Hour))
	a := e.Agent(v, agent.Config{Version: "1.0.0"})

	res, err := a.CheckinOnce(ctx)
	if err != nil {
		t.Fatalf("check-in: %v", err)
	}
	if diff := cmp.Diff([]agentpb.ActionType{agentpb.ActionType_ACTION_TYPE_RENEW}, actionTypes(res.Actions)); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	if res.Next != 30*time.Second {
		t.Errorf("next check-in = %v, want 30s", res.Next)
	}
	// CheckinOnce renewed: the store and the agent's folder hold the new serial.
	rec, err := e.Store.GetEnvoy(ctx, v.UUID)
	if err != nil {
		t.Fatal(err)
	}
	newCert := a.Enrollment().Certificate()
	if rec.CertSerial == ca.SerialHex(v.Cert) || rec.CertSerial != ca.SerialHex(newCert) {
		t.Fatalf("store serial %s, old %s, agent's %s", rec.CertSerial, ca.SerialHex(v.Cert), ca.SerialHex(newCert))
	}
	if reloaded, err := agent.Load(v.Dir); err != nil || ca.SerialHex(reloaded.Certificate()) != rec.CertSerial {
		t.Fatalf("saved certificate not the renewed one (err %v)", err)
	}
	if !newCert.NotAfter.After(v.Cert.NotAfter) {
		t.Errorf("renewed certificate expires %v, not after the old %v", newCert.NotAfter, v.Cert.NotAfter)
	}

	// The old certificate is refused at the handshake, the new one accepted.
	if got := e.HandshakeAlert(v.Cert, v.Key); got != "bad certificate" {
		t.Fatalf("old certificate: alert %q, want bad certificate", got)
	}
	if got := e.HandshakeAlert(newCert, v.Key); got != "" {
		t.Fatalf("renewed certificate: alert %q, want none", got)
	}
	// The renewed one works, with no renewal asked any more.
	res, err = a.CheckinOnce(ctx)
	if err != nil {
		t.Fatalf("check-in after renewal: %v", err)
	}
	if len(res.Actions) != 0 {
		t.Errorf("actions after renewal = %v, want none", actionTypes(res.Actions))
	}

	// Check-ins are recorded in batches.
	e.Server.Flush(ctx)
	if rec, err = e.Store.GetEnvoy(ctx, v.UUID); err != nil {
		t.Fatal(err)
	}
	if rec.AgentVersion != "1.0.0" || rec.LastAddr != "127.0.0.1" || rec.LastSeen.IsZero() {
		t.Errorf("recorded check-in: version %q addr %q last_seen %v", rec.AgentVersion, rec.LastAddr, rec.LastSeen)
	}

	// Revocation by policy.
	if _, err := e.Store.RevokeEnvoys(ctx, []store.Revocation{{UUID: v.UUID, Reason: "decommissioned", Revision: "3f2a9c1e0b", At: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	e.Server.EnvoyChanged(v.UUID)
	want := "envoy " + v.UUID + " is revoked: decommissioned (policy 3f2a9c1)"
	// On the open connection: the interceptor refuses, with the reason.
	_, err = a.CheckinOnce(ctx)
	rev, ok := grpcapitest.IsRevoked(err)
	if !ok || rev.Reason != want {
		t.Fatalf("check-in on the open connection: err = %v, want RevokedError %q", err, want)
	}
	// A new connection is refused at the handshake; Run gives up with a RevokedError.
	b := e.Agent(v, agent.Config{MaxBackoff: time.Millisecond})
	if _, err := b.Checkin(ctx); err == nil || !strings.Contains(err.Error(), "refused this envoy's certificate at the TLS handshake: bad certificate") {
		t.Fatalf("check-in on a new connection: err = %v, want a handshake refusal", err)
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = b.Run(rctx)
	if _, ok := grpcapitest.IsRevoked(err); !ok {
		t.Fatalf("Run = %v, want a RevokedError", err)
	}
	if got := e.HandshakeAlert(newCert, v.Key); got != "bad certificate" {
		t.Fatalf("revoked certificate: alert %q, want bad certificate", got)
	}
}

// TestRevokedOnOpenConnection checks the interceptor's refusal of an open
// connection whose envoy is revoked meanwhile, with status and message.
func TestRevokedOnOpenConnection(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	ctx := context.Background()
	v := e.EnrollNow("db1.example.com")
	c := e.RawClient(v.Cert, v.Key)
	if _, err := c.Checkin(ctx, grpcapitest.SignedRequest(v, time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Store.RevokeEnvoys(ctx, []store.Revocation{{Hostname: "db1.example.com", Reason: "stolen laptop", Revision: "abcdef0123", At: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	e.Server.EnvoyChanged(v.UUID)
	_, err := c.Checkin(ctx, grpcapitest.SignedRequest(v, time.Now()))
	want := status.New(codes.PermissionDenied, "envoy "+v.UUID+" is revoked: stolen laptop (policy abcdef0)")
	if diff := cmp.Diff(want.String(), status.Convert(err).String()); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if r := agentpb.RefusalOf(err); r != agentpb.RefusalEnvoyRevoked {
		t.Errorf("check-in refusal %q, want %q (the agent acts on it)", r, agentpb.RefusalEnvoyRevoked)
	}
	// A revoked envoy stays revoked: renewal is refused too.
	_, err = c.RenewCertificate(ctx, &agentpb.RenewCertificateRequest{})
	if status.Code(err) != codes.PermissionDenied || agentpb.RefusalOf(err) != agentpb.RefusalEnvoyRevoked {
		t.Errorf("renew of a revoked envoy: %v (refusal %q)", err, agentpb.RefusalOf(err))
	}
}

// TestRebootstrap: the flag is delivered, the agent re-registers with its
// old identity proven, the old uuid is revoked as rebootstrapped and the
// agent goes on with the new identity.
func TestRebootstrap(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	ctx := context.Background()
	v := e.EnrollNow("app1.example.com")
	a := e.Agent(v, agent.Config{})
	if _, err := a.CheckinOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Store.SetEnvoyFlags(ctx, v.UUID, store.EnvoyFlags{Rebootstrap: true},
		store.AuditEvent{Type: store.AuditEnvoyRebootstrap, EnvoyUUID: v.UUID, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	e.Server.EnvoyChanged(v.UUID)

	res, err := a.CheckinOnce(ctx)
	if err != nil {
		t.Fatalf("check-in with rebootstrap pending: %v", err)
	}
	if diff := cmp.Diff([]agentpb.ActionType{agentpb.ActionType_ACTION_TYPE_REBOOTSTRAP}, actionTypes(res.Actions)); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	newUUID := a.Enrollment().File.UUID
	if newUUID == v.UUID {
		t.Fatal("agent kept its old uuid")
	}
	old, err := e.Store.GetEnvoy(ctx, v.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if old.Status != store.StatusRevoked || old.RevokedReason != "rebootstrapped" {
		t.Errorf("old envoy: status %q reason %q", old.Status, old.RevokedReason)
	}
	saved, err := agent.Load(v.Dir)
	if err != nil || saved.File.UUID != newUUID {
		t.Fatalf("saved enrollment uuid %v (err %v), want %s", saved, err, newUUID)
	}
	if saved.Key.Equal(v.Key) {
		t.Error("rebootstrap kept the old key")
	}
	if _, err := a.CheckinOnce(ctx); err != nil {
		t.Fatalf("check-in with the new identity: %v", err)
	}
	// The old identity is refused at the handshake.
	if got := e.HandshakeAlert(v.Cert, v.Key); got != "bad certificate" {
		t.Fatalf("old identity: alert %q, want bad certificate", got)
	}
}

// TestCheckinRefusals sends hand-made requests over a valid connection.
func TestCheckinRefusals(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	ctx := context.Background()
	v := e.EnrollNow("web2.example.com")
	other := e.EnrollNow("web3.example.com")
	c := e.RawClient(v.Cert, v.Key)

	replayed := grpcapitest.SignedRequest(v, time.Now())
	if _, err := c.Checkin(ctx, replayed); err != nil {
		t.Fatalf("first send: %v", err)
	}
	tampered := grpcapitest.SignedRequest(v, time.Now())
	tampered.AgentVersion = "evil"
	badSig := grpcapitest.SignedRequest(v, time.Now())
	badSig.Signature[0] ^= 1
	otherKey := grpcapitest.SignedRequest(v, time.Now())
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	otherKey.Signature = ed25519.Sign(k, otherKey.SigningBytes())

	tests := []struct {
		name string
		req  *agentpb.CheckinRequest
		code codes.Code
		msg  string
	}{
		{"replayed", replayed, codes.Unauthenticated, "nonce was already used"},
		{"tampered field", tampered, codes.Unauthenticated, "signature does not verify"},
		{"tampered signature", badSig, codes.Unauthenticated, "signature does not verify"},
		{"signed by another key", otherKey, codes.Unauthenticated, "signature does not verify"},
		{"stale timestamp", grpcapitest.SignedRequest(v, time.Now().Add(-6*time.Minute)), codes.Unauthenticated, "timestamp is 6m0s off"},
		{"future timestamp", grpcapitest.SignedRequest(v, time.Now().Add(6*time.Minute)), codes.Unauthenticated, "timestamp is 6m0s off"},
		{"another envoy's uuid", grpcapitest.SignedRequest(other, time.Now()), codes.Unauthenticated, "over the connection of envoy"},
		{"short nonce", func() *agentpb.CheckinRequest {
			r := grpcapitest.SignedRequest(v, time.Now())
			r.Nonce = r.Nonce[:8]
			return r
		}(), codes.InvalidArgument, "nonce must be 16 bytes"},
		{"no signature", func() *agentpb.CheckinRequest {
			r := grpcapitest.SignedRequest(v, time.Now())
			r.Signature = nil
			return r
		}(), codes.InvalidArgument, "signature must be 64 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Checkin(ctx, tt.req)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
	// A certificate in the first half of its life is not renewed.
	if _, err := c.RenewCertificate(ctx, &agentpb.RenewCertificateRequest{}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "is not due for renewal before") {
		t.Errorf("early renewal: %v", err)
	}
	// Within the window a timestamp a little off is fine.
	if _, err := c.Checkin(ctx, grpcapitest.SignedRequest(v, time.Now().Add(-4*time.Minute))); err != nil {
		t.Errorf("4 minutes off: %v", err)
	}
}

// TestForeignCA: a certificate for a known uuid, signed by another CA, is
// refused at the handshake.
func TestForeignCA(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	v := e.EnrollNow("web4.example.com")
	foreign, err := ca.LoadOrCreate(ca.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := foreign.SignEnvoy(ca.EnvoyParams{PublicKey: v.Key.Public().(ed25519.PublicKey), Hostname: v.Hostname, UUID: v.UUID, NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// The chain is verified in VerifyConnection, whose refusals crypto/tls
	// always sends as "bad certificate" (it sent "unknown certificate
	// authority" when it verified the chain itself).
	if got := e.HandshakeAlert(cert, v.Key); got != "bad certificate" {
		t.Fatalf("foreign CA: alert %q, want bad certificate", got)
	}
	if got := e.HandshakeAlert(v.Cert, v.Key); got != "" {
		t.Fatalf("genuine certificate: alert %q, want none", got)
	}
}

// TestBadServerSignature: an answer not signed by the pinned key is
// rejected by the agent.
func TestBadServerSignature(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	v := e.EnrollNow("web5.example.com")
	// Pin another key than the one the server signs with.
	enr, err := agent.Load(v.Dir)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	f := enr.File
	f.ServerPublicKey = grpcapitest.PubPEM(t, pub)
	if err := agent.WriteEnrollment(v.Dir, f, v.Key, v.Cert, e.CA.Certificate()); err != nil {
		t.Fatal(err)
	}
	a := e.Agent(v, agent.Config{})
	_, err = a.CheckinOnce(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not signed by the pinned server key") {
		t.Fatalf("err = %v, want a signature rejection", err)
	}
	st, err := agent.ReadStatus(v.Dir)
	if err != nil || !st.LastCheckin.IsZero() || st.LastError == "" {
		t.Errorf("status after a rejected answer: %+v (err %v)", st, err)
	}
}

// TestRebootstrapUpdatesAgent: `vigocli envoys rebootstrap` also brings
// the envoy to the agent build the server serves for its platform (the
// original: "updates can be triggered remotely via vigocli envoys
// rebootstrap"), without agent.version or an update flag: the update comes
// first, so that the new identity is registered by the new agent, and a
// failing update does not block the rebootstrap.
func TestRebootstrapUpdatesAgent(t *testing.T) {
	sum := strings.Repeat("cd", 32)
	served := func(goos, arch string) (string, string, bool) { return "2.0.0", sum, true }
	e := grpcapitest.New(t, grpcapitest.Options{AgentVersion: served})
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		running   string
		updateErr error
		want      []agentpb.ActionType
		wantHook  []string
	}{
		{name: "older agent", running: "1.0.0", want: []agentpb.ActionType{agentpb.ActionType_ACTION_TYPE_UPDATE, agentpb.ActionType_ACTION_TYPE_REBOOTSTRAP}, wantHook: []string{"2.0.0", sum}},
		{name: "update fails", running: "1.0.0", updateErr: errors.New("signature refused"), want: []agentpb.ActionType{agentpb.ActionType_ACTION_TYPE_UPDATE, agentpb.ActionType_ACTION_TYPE_REBOOTSTRAP}, wantHook: []string{"2.0.0", sum}},
		{name: "current agent", running: "2.0.0", want: []agentpb.ActionType{agentpb.ActionType_ACTION_TYPE_REBOOTSTRAP}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := e.EnrollNow(strings.ReplaceAll(tc.name, " ", "-") + ".example.com")
			var hook []string
			a := e.Agent(v, agent.Config{Version: tc.running, Update: func(_ context.Context, want update.Want) error {
				hook = append(hook, want.Version, want.SHA256)
				return tc.updateErr
			}})
			if err := e.Store.SetEnvoyFlags(ctx, v.UUID, store.EnvoyFlags{Rebootstrap: true},
				store.AuditEvent{Type: store.AuditEnvoyRebootstrap, EnvoyUUID: v.UUID, At: time.Now()}); err != nil {
				t.Fatal(err)
			}
			e.Server.EnvoyChanged(v.UUID)
			res, err := a.CheckinOnce(ctx)
			if err != nil {
				t.Fatalf("check-in: %v", err)
			}
			if diff := cmp.Diff(tc.want, actionTypes(res.Actions)); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantHook, hook); diff != "" {
				t.Errorf("update hook (-want +got):\n%s", diff)
			}
			if a.Enrollment().File.UUID == v.UUID {
				t.Error("the envoy did not rebootstrap")
			}
		})
	}
}

// TestUpdateAction: an update is offered when the served build is the
// version the envoy should run (the fleet-wide target or its own flag), and
// the hook is called; nothing is offered otherwise.
func TestUpdateAction(t *testing.T) {
	served := func(goos, arch string) (string, string, bool) { return "2.0.0", strings.Repeat("ab", 32), true }
	target := ""
	e := grpcapitest.New(t, grpcapitest.Options{AgentVersion: served, TargetVersion: func() string { return target }})
	v := e.EnrollNow("web6.example.com")
	checkin := func(version string) []string {
		t.Helper()
		var got []string
		a := e.Agent(v, agent.Config{Version: version, Update: func(_ context.Context, want update.Want) error {
			got = append(got, want.Version, want.SHA256)
			if want.AllowDowngrade {
				got = append(got, "allow_downgrade")
			}
			return nil
		}})
		if _, err := a.CheckinOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := checkin("1.0.0"); got != nil {
		t.Errorf("no target and no flag: update offered %v", got)
	}
	target = "2.0.0"
	if diff := cmp.Diff([]string{"2.0.0", strings.Repeat("ab", 32)}, checkin("1.0.0")); diff != "" {
		t.Errorf("fleet-wide target: update hook (-want +got):\n%s", diff)
	}
	if got := checkin("2.0.0"); got != nil {
		t.Errorf("same version: update offered %v", got)
	}
	// The envoy's own flag wins over the target: a version not served is not offered.
	if err := e.Store.SetEnvoyFlags(context.Background(), v.UUID, store.EnvoyFlags{UpdateVersion: "3.0.0"}, store.AuditEvent{Type: store.AuditEnvoyUpdate}); err != nil {
		t.Fatal(err)
	}
	e.Server.EnvoyChanged(v.UUID)
	if got := checkin("1.0.0"); got != nil {
		t.Errorf("flag for a version that is not served: update offered %v", got)
	}
	target = ""
	if err := e.Store.SetEnvoyFlags(context.Background(), v.UUID, store.EnvoyFlags{UpdateVersion: "2.0.0"}, store.AuditEvent{Type: store.AuditEnvoyUpdate}); err != nil {
		t.Fatal(err)
	}
	e.Server.EnvoyChanged(v.UUID)
	if diff := cmp.Diff([]string{"2.0.0", strings.Repeat("ab", 32)}, checkin("1.0.0")); diff != "" {
		t.Errorf("per-envoy flag without a target: update hook (-want +got):\n%s", diff)
	}

	// Issue 12 item 3: an older version (or one that cannot be ordered) is
	// offered only with the operator's consent, which the signed response
	// carries to the agent.
	if got := checkin("3.0.0"); got != nil {
		t.Errorf("flag for an older version without consent: update offered %v", got)
	}
	if got := checkin("dev"); got != nil {
		t.Errorf("flag for a version that cannot be ordered without consent: update offered %v", got)
	}
	target = "2.0.0"
	if err := e.Store.SetEnvoyFlags(context.Background(), v.UUID, store.EnvoyFlags{}, store.AuditEvent{Type: store.AuditEnvoyUpdate}); err != nil {
		t.Fatal(err)
	}
	e.Server.EnvoyChanged(v.UUID)
	if got := checkin("3.0.0"); got != nil {
		t.Errorf("fleet-wide target older than the agent: update offered %v", got)
	}
	if err := e.Store.SetEnvoyFlags(context.Background(), v.UUID, store.EnvoyFlags{UpdateVersion: "2.0.0", UpdateAllowDowngrade: true}, store.AuditEvent{Type: store.AuditEnvoyUpdate}); err != nil {
		t.Fatal(err)
	}
	e.Server.EnvoyChanged(v.UUID)
	if diff := cmp.Diff([]string{"2.0.0", strings.Repeat("ab", 32), "allow_downgrade"}, checkin("3.0.0")); diff != "" {
		t.Errorf("downgrade with consent: update hook (-want +got):\n%s", diff)
	}
}

// TestIdleTimeout: with an idle timeout the server closes a quiet agent
// connection (the gauge of open connections drops), and the agent's next
// check-in simply opens a new one.
func TestIdleTimeout(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := grpcapitest.New(t, grpcapitest.Options{IdleTimeout: 100 * time.Millisecond, Registerer: reg})
	v := e.EnrollNow("idle.example.com")
	a := e.Agent(v, agent.Config{})
	conns := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "vigo_grpc_connections" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no vigo_grpc_connections metric")
		return 0
	}
	if _, err := a.CheckinOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := conns(); n != 1 {
		t.Fatalf("open connections after a check-in = %v, want 1", n)
	}
	deadline := time.Now().Add(20 * time.Second)
	for conns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection was not closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := a.CheckinOnce(context.Background()); err != nil {
		t.Fatalf("check-in after the idle close: %v", err)
	}
}

// TestStatusFile: a successful check-in is recorded for `vigo status`.
func TestStatusFile(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	v := e.EnrollNow("web7.example.com")
	a := e.Agent(v, agent.Config{})
	if _, err := a.CheckinOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := agent.ReadStatus(v.Dir)
	if err != nil || st.LastCheckin.IsZero() || st.LastError != "" {
		t.Errorf("status: %+v (err %v)", st, err)
	}
	if _, err := agent.ReadFile(filepath.Join(v.Dir, "nope")); err != agent.ErrNotRegistered {
		t.Errorf("ReadFile of an empty folder: %v", err)
	}
}

// TestRenewNewKey: a CSR for a new key replaces the stored key; check-ins
// must then be signed with it.
func TestRenewNewKey(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	ctx := context.Background()
	now := time.Now()
	v := e.Enroll("key1.example.com", now.Add(-3*time.Hour), now.Add(time.Hour))
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.RawClient(v.Cert, v.Key).RenewCertificate(ctx, &agentpb.RenewCertificateRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(resp.GetCertificate())
	if err != nil {
		t.Fatal(err)
	}
	if uuid, _ := ca.EnvoyUUID(cert); uuid != v.UUID || !pub.Equal(cert.PublicKey) || cert.Subject.CommonName != v.Hostname {
		t.Fatalf("renewed certificate: uuid %s, cn %s", uuid, cert.Subject.CommonName)
	}
	rec, err := e.Store.GetEnvoy(ctx, v.UUID)
	if err != nil || !pub.Equal(ed25519.PublicKey(rec.PublicKey)) {
		t.Fatalf("stored key not replaced (err %v)", err)
	}
	c := e.RawClient(cert, key)
	old := grpcapitest.SignedRequest(v, time.Now()) // signed with the old key
	if _, err := c.Checkin(ctx, old); status.Code(err) != codes.Unauthenticated {
		t.Errorf("check-in signed with the replaced key: %v", err)
	}
	nv := v
	nv.Key, nv.Cert = key, cert
	if _, err := c.Checkin(ctx, grpcapitest.SignedRequest(nv, time.Now())); err != nil {
		t.Errorf("check-in with the new key: %v", err)
	}
}

// TestExpiredCertificateExplained: the server refuses an expired envoy
// certificate at the handshake with a bare "bad certificate"; the agent
// says what happened and what to do.
func TestExpiredCertificateExplained(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	now := time.Now()
	v := e.Enroll("old1.example.com", now.Add(-48*time.Hour), now.Add(-time.Minute))
	a := e.Agent(v, agent.Config{MaxBackoff: time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := a.Run(ctx)
	rev, ok := grpcapitest.IsRevoked(err)
	if !ok || !strings.Contains(rev.Reason, "certificate expired at "+v.Cert.NotAfter.UTC().Format(time.RFC3339)) || !strings.Contains(rev.Reason, "vigo register --force") {
		t.Fatalf("Run = %v, want a RevokedError saying the certificate expired and what to do", err)
	}
}

// TestBoundedInputCheckin (issue 12, item 4, gRPC side): an oversized
// check-in field is refused with a short message that does not repeat it
// (the refusal is also what the server logs).
func TestBoundedInputCheckin(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	v := e.EnrollNow("bounded.example.com")
	c := e.RawClient(v.Cert, v.Key)
	big := strings.Repeat("Z", 60000)
	for _, tt := range []struct {
		name string
		edit func(*agentpb.CheckinRequest)
	}{
		{"uuid", func(r *agentpb.CheckinRequest) { r.Uuid = big }},
		{"hostname", func(r *agentpb.CheckinRequest) { r.Hostname = big }},
		{"agent_version", func(r *agentpb.CheckinRequest) { r.AgentVersion = big }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := grpcapitest.SignedRequest(v, time.Now())
			tt.edit(r)
			r.Signature = ed25519.Sign(v.Key, r.SigningBytes())
			_, err := c.Checkin(context.Background(), r)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || len(st.Message()) > 200 || strings.Contains(st.Message(), "ZZZZ") {
				t.Errorf("got %v %.200q (%d bytes), want InvalidArgument with a short message", st.Code(), st.Message(), len(st.Message()))
			}
		})
	}
}

// TestReplayCacheOneEnvoyCannotLockOutOthers (issue 12, item 1): an
// enrolled envoy flooding the server with validly signed check-ins whose
// nonces all start with the same byte, timestamped near the end of the
// window so they are remembered longest, hurts only itself: other envoys'
// check-ins, whatever their nonces, are still accepted.
func TestReplayCacheOneEnvoyCannotLockOutOthers(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	ctx := context.Background()
	flooder, victim := e.EnrollNow("flood.example.com"), e.EnrollNow("victim.example.com")
	fc, vc := e.RawClient(flooder.Cert, flooder.Key), e.RawClient(victim.Cert, victim.Key)
	withNonce0 := func(v grpcapitest.Envoy, at time.Time, b byte) *agentpb.CheckinRequest {
		r := grpcapitest.SignedRequest(v, at)
		r.Nonce[0] = b
		r.Signature = ed25519.Sign(v.Key, r.SigningBytes())
		return r
	}
	refused := 0
	for range 100 {
		if _, err := fc.Checkin(ctx, withNonce0(flooder, time.Now().Add(4*time.Minute+50*time.Second), 0)); err != nil {
			refused++
		}
	}
	if refused == 0 {
		t.Error("the flooder was never refused (per-envoy rate limit)")
	}
	for i := range 10 {
		if _, err := vc.Checkin(ctx, withNonce0(victim, time.Now(), byte(i%2*64))); err != nil {
			t.Fatalf("victim check-in %d after the flood: %v", i, err)
		}
	}
}

// TestReplayAfterRestartRefused (issue 12, item 1, review L7): a check-in
// accepted before a restart is refused after it, though the new process
// remembers no nonce: the newest accepted check-in time of each envoy is
// recorded with its batched check-ins, and a check-in must be newer.
func TestReplayAfterRestartRefused(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	ctx := context.Background()
	v := e.EnrollNow("restart.example.com")
	saved := grpcapitest.SignedRequest(v, time.Now())
	if _, err := e.RawClient(v.Cert, v.Key).Checkin(ctx, saved); err != nil {
		t.Fatalf("first send: %v", err)
	}
	e.Restart()
	c := e.RawClient(v.Cert, v.Key)
	_, err := c.Checkin(ctx, saved)
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "not newer than") {
		t.Fatalf("replay after a restart: %v %q, want Unauthenticated, not newer than", st.Code(), st.Message())
	}
	// The envoy's next check-in is accepted.
	if _, err := c.Checkin(ctx, grpcapitest.SignedRequest(v, time.Now().Add(time.Second))); err != nil {
		t.Fatalf("new check-in after the restart: %v", err)
	}
}

// TestCheckinHostnameMustBeEnrolled (issue 12, item 12): the hostname a
// check-in carries (and signs) must be the envoy's enrolled hostname,
// compared normalised (case, one trailing dot); another is refused.
func TestCheckinHostnameMustBeEnrolled(t *testing.T) {
	e := grpcapitest.New(t, grpcapitest.Options{})
	v := e.EnrollNow("named.example.com")
	c := e.RawClient(v.Cert, v.Key)
	at := time.Now()
	for _, tt := range []struct {
		hostname string
		code     codes.Code
	}{
		{"named.example.com", codes.OK},
		{"Named.Example.COM.", codes.OK},
		{"other.example.com", codes.InvalidArgument},
		{"", codes.InvalidArgument},
		{"named.example.com\x1b[31m", codes.InvalidArgument},
	} {
		t.Run(tt.hostname, func(t *testing.T) {
			at = at.Add(time.Millisecond)
			r := grpcapitest.SignedRequest(v, at)
			r.Hostname = tt.hostname
			r.Signature = ed25519.Sign(v.Key, r.SigningBytes())
			_, err := c.Checkin(context.Background(), r)
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("hostname %q: %v %q, want %v", tt.hostname, st.Code(), st.Message(), tt.code)
			}
			if tt.code != codes.OK && (!strings.Contains(st.Message(), `not the enrolled hostname "named.example.com"`) || strings.Contains(st.Message(), "\x1b")) {
				t.Errorf("message %q does not name the enrolled hostname (or repeats control bytes)", st.Message())
			}
		})
	}
}
