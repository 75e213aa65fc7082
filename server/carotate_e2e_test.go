package server_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/carotate"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// warnings records the log records at Warn and above.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	w.mu.Lock()
	w.msgs = append(w.msgs, b.String())
	w.mu.Unlock()
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }
func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}

// rotatorFor is what `vigosrv ca` does beside a running server: its own
// copy of the CA loaded from the data folder, and the server's database.
func rotatorFor(t *testing.T, in *servertest.Instance, caCfg ca.Config) *carotate.Rotator {
	t.Helper()
	authority, err := ca.LoadOrCreate(caCfg)
	if err != nil {
		t.Fatal(err)
	}
	if authority.Created {
		t.Fatal("the rotator created a CA")
	}
	// ApplyDelay is the servers' replica_refresh in these tests.
	r, err := carotate.New(carotate.Config{Store: in.Store(), CA: authority, Actor: "test-operator", ApplyDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rotationAgent registers hostname with in and returns its agent, which
// logs its warnings to log.
func rotationAgent(t *testing.T, in *servertest.Instance, hostname string, log *warnings) *agent.Agent {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "etc")
	if _, err := agent.Register(t.Context(), agent.RegisterParams{Server: in.URL, Hostname: hostname, Dir: dir, CAFingerprint: in.CA().Fingerprint()}); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{Dir: dir, Logger: slog.New(log), MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestCARotationUnderRunningAgents rotates the CA while agents check in
// continuously (agent.Run, every second): prepare, activate, every agent
// renews onto the new CA, finish. No check-in is refused, and after finish
// a certificate of the old CA is refused.
func TestCARotationUnderRunningAgents(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var srvLog servertest.SyncBuffer
	in := servertest.Start(t, servertest.Options{Log: &srvLog, Config: func(c *server.Config) {
		c.Bootstrap.CheckinInterval = server.Duration(time.Second)
		c.Server.ReplicaRefresh = server.Duration(100 * time.Millisecond)
	}})
	oldCA := in.CA().Certificate()
	rot := rotatorFor(t, in, ca.Config{Dir: in.DataDir})

	const n = 4
	agentLog := &warnings{}
	var dirs []string
	var agents []*agent.Agent
	for i := range n + 1 {
		a := rotationAgent(t, in, fmt.Sprintf("rot%d.trusted.test", i), agentLog)
		dirs, agents = append(dirs, a.Enrollment().Dir), append(agents, a)
	}
	// The last one checks in once and then stays off: an envoy that holds
	// an old-CA certificate when the rotation finishes.
	offline := agents[n]
	if _, err := offline.CheckinOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	runErrs := make([]error, n)
	for i, a := range agents[:n] {
		wg.Go(func() { runErrs[i] = a.Run(ctx) })
	}

	step := func(name string, fn func(context.Context) (carotate.Result, error)) carotate.Result {
		t.Helper()
		res, err := fn(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !res.Changed {
			t.Fatalf("%s: nothing changed: %s", name, res.Message)
		}
		// Repeating a step is a no-op with a message.
		again, err := fn(ctx)
		if err != nil || again.Changed || again.Message == "" {
			t.Fatalf("%s again = %+v, %v; want no change, with a message", name, again, err)
		}
		return res
	}
	trusts := func(a *agent.Agent, c *x509.Certificate) bool {
		for _, t := range a.Enrollment().TrustedCAs() {
			if t.Equal(c) {
				return true
			}
		}
		return false
	}

	// Out of order: nothing to activate or finish yet.
	if _, err := rot.Activate(ctx, false); !errors.Is(err, carotate.ErrOutOfOrder) {
		t.Fatalf("activate before prepare: %v, want ErrOutOfOrder", err)
	}

	step("prepare", rot.Prepare)
	st, err := rot.Status(ctx)
	if err != nil || st.Phase != ca.PhasePrepared || len(st.CAs) != 2 || st.NotYetTrusting != n+1 {
		t.Fatalf("status after prepare: %+v, %v; want %d envoys not yet trusting the next CA", st, err, n+1)
	}
	newCA := st.CAs[1].Certificate
	if _, err := rot.Finish(ctx, false); !errors.Is(err, carotate.ErrOutOfOrder) {
		t.Fatalf("finish before activate: %v, want ErrOutOfOrder", err)
	}
	// No envoy checked in since the next CA was handed out: activating
	// now would lock them out.
	if _, err := rot.Activate(ctx, false); !errors.Is(err, carotate.ErrEnvoysRemain) || !strings.Contains(err.Error(), fmt.Sprintf("%d active envoys have not checked in", n+1)) {
		t.Fatalf("activate right after prepare: %v, want ErrEnvoysRemain naming %d envoys", err, n+1)
	}
	// The offline agent checks in (and receives the bundle) until
	// activate accepts: then every envoy checked in since prepare.
	var activated carotate.Result
	waitFor(t, "activate accepted", func() (bool, string) {
		if _, err := offline.CheckinOnce(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := rot.Activate(ctx, false)
		if errors.Is(err, carotate.ErrEnvoysRemain) {
			return false, err.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
		activated = res
		return true, ""
	})
	if !activated.Changed || activated.Warning != "" {
		t.Fatalf("activate = %+v", activated)
	}
	if again, err := rot.Activate(ctx, false); err != nil || again.Changed || again.Message == "" {
		t.Fatalf("activate again = %+v, %v; want no change, with a message", again, err)
	}
	for i, a := range agents {
		if !trusts(a, oldCA) || !trusts(a, newCA) {
			t.Fatalf("agent %d trusts %d CAs after activation was accepted", i, len(a.Enrollment().TrustedCAs()))
		}
	}
	waitFor(t, "every running agent renewed onto the new CA", func() (bool, string) {
		for i, a := range agents[:n] {
			if a.Enrollment().Certificate().CheckSignatureFrom(newCA) != nil {
				return false, fmt.Sprintf("agent %d still holds a certificate from the old CA", i)
			}
		}
		return true, ""
	})
	waitFor(t, "the server presents a certificate from the new CA", func() (bool, string) {
		leaf, err := x509.ParseCertificate(in.CA().ServerTLSCertificate().Certificate[0])
		return err == nil && leaf.CheckSignatureFrom(newCA) == nil, "not yet"
	})
	st, err = rot.Status(ctx)
	if err != nil || st.CAs[0].Envoys != 1 || st.CAs[1].Envoys != n {
		t.Fatalf("status after renewals: %+v, %v; want 1 envoy on the old CA, %d on the new", st, err, n)
	}

	// The offline envoy still holds an old-CA certificate: finish refuses.
	_, err = rot.Finish(ctx, false)
	if !errors.Is(err, carotate.ErrEnvoysRemain) || !strings.Contains(err.Error(), "1 active envoys") {
		t.Fatalf("finish with an envoy left: %v, want ErrEnvoysRemain naming 1", err)
	}
	res, err := rot.Finish(ctx, true)
	if err != nil || !res.Changed || res.Warning == "" {
		t.Fatalf("finish --force = %+v, %v; want a change and a warning", res, err)
	}
	waitFor(t, "the server dropped the old CA", func() (bool, string) {
		tr := in.CA().Trusted()
		return len(tr) == 1 && tr[0].Equal(newCA), fmt.Sprintf("%d trusted", len(tr))
	})
	// The running agents keep checking in over new connections.
	for i, a := range agents[:n] {
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		b, err := agent.New(agent.Config{Dir: dirs[i]})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.CheckinOnce(ctx); err != nil {
			t.Errorf("agent %d after finish: %v", i, err)
		}
		b.Close()
	}
	// The old-CA certificate is refused (the agent trusts the new CA: it
	// is the server that refuses it).
	// Over the connection it opened before finish (the roots it was
	// verified against changed)...
	if _, err := offline.CheckinOnce(ctx); err == nil || !strings.Contains(err.Error(), "not from a CA this server trusts") {
		t.Fatalf("a certificate from the dropped CA after finish, over an old connection: %v, want a refusal", err)
	}
	// ...and over a new one, at the handshake.
	late, err := agent.New(agent.Config{Dir: dirs[n]})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if _, err := late.CheckinOnce(ctx); err == nil || !strings.Contains(err.Error(), "refused this envoy's certificate at the TLS handshake") {
		t.Fatalf("a certificate from the dropped CA after finish, new connection: %v, want a refusal at the handshake", err)
	}

	cancel()
	wg.Wait()
	for i, err := range runErrs {
		if err != nil {
			t.Errorf("agent %d: Run: %v", i, err)
		}
	}
	// Not one refused check-in while the rotation ran.
	for _, m := range agentLog.all() {
		t.Errorf("agent warning during the rotation: %s", m)
	}
	for _, line := range strings.Split(srvLog.String(), "\n") {
		if strings.Contains(line, "refused") && !strings.Contains(line, "rot4.trusted.test") && !strings.Contains(line, offlineUUID(t, dirs[n])) {
			t.Errorf("server refusal during the rotation: %s", line)
		}
	}
	// Every step is audited.
	evs, err := in.Store().ListAudit(t.Context(), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		if strings.HasPrefix(e.Type, "ca.") {
			types = append(types, e.Type+" by "+e.Actor)
		}
	}
	if want := "ca.prepared by test-operator,ca.activated by test-operator,ca.finished by test-operator"; strings.Join(types, ",") != want {
		t.Errorf("audit = %v, want %s", types, want)
	}
	// A restart keeps the new CA (installed in the CA files).
	c2, err := ca.LoadOrCreate(ca.Config{Dir: in.DataDir})
	if err != nil || !c2.Certificate().Equal(newCA) {
		t.Errorf("CA files after the rotation: %v", err)
	}
}

func offlineUUID(t *testing.T, dir string) string {
	f, err := agent.ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f.UUID
}

// TestBackupHoldsTheNextCA: a backup taken during a CA rotation holds the
// next CA's key (0600), and a restore puts it back beside the CA.
func TestBackupHoldsTheNextCA(t *testing.T) {
	ctx := t.Context()
	data := t.TempDir()
	in := servertest.Start(t, servertest.Options{DataDir: data})
	rot := rotatorFor(t, in, ca.Config{Dir: data})
	if _, err := rot.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := rot.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	info, err := server.Backup(ctx, backupConfig(data), &archive)
	if err != nil {
		t.Fatal(err)
	}
	name := "tls/ca-" + st.CAs[1].Fingerprint[:16]
	var names []string
	for _, f := range info.Files {
		names = append(names, f.Name)
	}
	if !slices.Contains(names, name+".key") || !slices.Contains(names, name+".pem") {
		t.Fatalf("backup files %v: want %s.key and .pem", names, name)
	}
	restored := t.TempDir()
	if _, err := server.Restore(bytes.NewReader(archive.Bytes()), backupConfig(restored), server.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(restored, name+".key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("restored next CA key: %v, %v; want 0600", fi, err)
	}
}

// TestReplicaCARotation: two replicas sharing PostgreSQL (and the CA
// files' folder) follow each step of a rotation run beside them, without
// a restart, while an agent of each checks in continuously.
func TestReplicaCARotation(t *testing.T) {
	rs := servertest.StartReplicas(t, 2, servertest.Options{Config: func(c *server.Config) {
		c.Bootstrap.CheckinInterval = server.Duration(time.Second)
		c.Server.ReplicaRefresh = server.Duration(100 * time.Millisecond)
	}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rot := rotatorFor(t, rs[0], rs[0].CA().Config())
	agentLog := &warnings{}
	var agents []*agent.Agent
	for i, in := range rs {
		agents = append(agents, rotationAgent(t, in, fmt.Sprintf("rep%d.trusted.test", i), agentLog))
	}
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(func() { _ = a.Run(ctx) })
	}
	if _, err := rot.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := rot.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newCA := st.CAs[1].Certificate
	waitFor(t, "both replicas and agents trust both CAs", func() (bool, string) {
		for i, in := range rs {
			if len(in.CA().Trusted()) != 2 {
				return false, fmt.Sprintf("replica-%d trusts one CA", i+1)
			}
		}
		for i, a := range agents {
			if len(a.Enrollment().TrustedCAs()) != 2 {
				return false, fmt.Sprintf("agent %d trusts one CA", i)
			}
		}
		return true, ""
	})
	waitFor(t, "activate accepted", func() (bool, string) {
		_, err := rot.Activate(ctx, false)
		if errors.Is(err, carotate.ErrEnvoysRemain) {
			return false, err.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
		return true, ""
	})
	waitFor(t, "both replicas sign with the new CA and both agents renewed", func() (bool, string) {
		for i, in := range rs {
			if !in.CA().Certificate().Equal(newCA) {
				return false, fmt.Sprintf("replica-%d signs with the old CA", i+1)
			}
		}
		for i, a := range agents {
			if a.Enrollment().Certificate().CheckSignatureFrom(newCA) != nil {
				return false, fmt.Sprintf("agent %d holds an old-CA certificate", i)
			}
		}
		return true, ""
	})
	if _, err := rot.Finish(ctx, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both replicas trust only the new CA", func() (bool, string) {
		for i, in := range rs {
			if tr := in.CA().Trusted(); len(tr) != 1 || !tr[0].Equal(newCA) {
				return false, fmt.Sprintf("replica-%d trusts %d CAs", i+1, len(tr))
			}
		}
		return true, ""
	})
	// Both agents still check in, on a new connection.
	for i, a := range agents {
		b, err := agent.New(agent.Config{Dir: a.Enrollment().Dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.CheckinOnce(ctx); err != nil {
			t.Errorf("agent %d after finish: %v", i, err)
		}
		b.Close()
	}
	cancel()
	wg.Wait()
	for _, m := range agentLog.all() {
		t.Errorf("agent warning during the rotation: %s", m)
	}
}

// TestCARotationRollbackUnderRunningAgents: activate, then roll back twice
// while agents check in: they renew back onto the previous CA, and end
// trusting it alone, without a refused check-in.
func TestCARotationRollbackUnderRunningAgents(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	in := servertest.Start(t, servertest.Options{Config: func(c *server.Config) {
		c.Bootstrap.CheckinInterval = server.Duration(time.Second)
		c.Server.ReplicaRefresh = server.Duration(100 * time.Millisecond)
	}})
	oldCA := in.CA().Certificate()
	rot := rotatorFor(t, in, ca.Config{Dir: in.DataDir})
	agentLog := &warnings{}
	var agents []*agent.Agent
	for i := range 2 {
		agents = append(agents, rotationAgent(t, in, fmt.Sprintf("back%d.trusted.test", i), agentLog))
	}
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(func() { _ = a.Run(ctx) })
	}
	if _, err := rot.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "activate accepted", func() (bool, string) {
		_, err := rot.Activate(ctx, false)
		if errors.Is(err, carotate.ErrEnvoysRemain) {
			return false, err.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
		return true, ""
	})
	onCA := func(want *x509.Certificate) func() (bool, string) {
		return func() (bool, string) {
			for i, a := range agents {
				if a.Enrollment().Certificate().CheckSignatureFrom(want) != nil {
					return false, fmt.Sprintf("agent %d not on %s", i, want.Subject.CommonName)
				}
			}
			return true, ""
		}
	}
	st, err := rot.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "agents renewed onto the new CA", onCA(st.CAs[1].Certificate))
	if res, err := rot.Rollback(ctx); err != nil || !res.Changed {
		t.Fatalf("rollback from active = %+v, %v", res, err)
	}
	waitFor(t, "agents renewed back onto the old CA", onCA(oldCA))
	if res, err := rot.Rollback(ctx); err != nil || !res.Changed {
		t.Fatalf("rollback from prepared = %+v, %v", res, err)
	}
	waitFor(t, "server and agents trust the old CA alone", func() (bool, string) {
		if tr := in.CA().Trusted(); len(tr) != 1 || !tr[0].Equal(oldCA) {
			return false, "server"
		}
		for i, a := range agents {
			if tr := a.Enrollment().TrustedCAs(); len(tr) != 1 || !tr[0].Equal(oldCA) {
				return false, fmt.Sprintf("agent %d trusts %d CAs", i, len(tr))
			}
		}
		return true, ""
	})
	cancel()
	wg.Wait()
	for _, m := range agentLog.all() {
		t.Errorf("agent warning during the rollback: %s", m)
	}
}
