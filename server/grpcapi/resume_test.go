package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/grpcapi"
	"github.com/vigo-enroll/vigo/server/grpcapi/grpcapitest"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/storetest"
)

// handshake connects with conf and reads until the server's first bytes
// (its HTTP/2 settings), by which time the session ticket it sends after
// the handshake has been processed. It returns whether the handshake
// resumed a session, or the handshake's error.
func handshake(t *testing.T, addr string, conf *tls.Config) (resumed bool, err error) {
	t.Helper()
	conf = conf.Clone()
	conf.NextProtos = []string{"h2"} // gRPC refuses a connection without it
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// The HTTP/2 client preface and an empty SETTINGS frame: the server
	// answers with its own settings.
	if _, err := c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")); err != nil {
		return false, err
	}
	if _, err := c.Read(make([]byte, 64)); err != nil {
		// TLS 1.3: a refused client certificate is seen at the first read.
		return false, err
	}
	return c.ConnectionState().DidResume, nil
}

// resumptionEnv is a server with a settable clock and its metrics.
func resumptionEnv(t *testing.T) (*grpcapitest.Env, *storetest.Clock, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	clk := storetest.NewClock(time.Now())
	e := grpcapitest.New(t, grpcapitest.Options{Registerer: reg, Config: func(c *grpcapi.Config) { c.Now = clk.Now }})
	return e, clk, reg
}

// firstSession makes v's first connection with a session cache and
// returns its TLS configuration, which the next connections resume with.
func firstSession(t *testing.T, e *grpcapitest.Env, v grpcapitest.Envoy, now func() time.Time) *tls.Config {
	t.Helper()
	conf := e.ClientTLS(v.Cert, v.Key)
	conf.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	conf.Time = now
	if resumed, err := handshake(t, e.Addr, conf); err != nil || resumed {
		t.Fatalf("first connection: resumed %v, err %v; want a full handshake", resumed, err)
	}
	return conf
}

func resumptions(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	return metricValue(t, reg, "vigo_grpc_session_resumptions_total", "result", result)
}

// TestSessionResumption (issue 19, item 1): a reconnecting envoy resumes
// its TLS session, and a ticket resumes only while everything a full
// handshake checks still holds — each case on a resumed connection.
func TestSessionResumption(t *testing.T) {
	t.Run("resumes", func(t *testing.T) {
		e, _, reg := resumptionEnv(t)
		v := e.EnrollNow("web1.example.com")
		conf := firstSession(t, e, v, time.Now)
		for i := range 3 {
			if resumed, err := handshake(t, e.Addr, conf); err != nil || !resumed {
				t.Fatalf("reconnection %d: resumed %v, err %v; want a resumed session", i, resumed, err)
			}
		}
		if n := resumptions(t, reg, "accepted"); n != 3 {
			t.Errorf("accepted resumptions = %v, want 3", n)
		}
		// A check-in on a resumed connection is the envoy's.
		if _, err := e.RawClient(v.Cert, v.Key).Checkin(context.Background(), grpcapitest.SignedRequest(v, time.Now())); err != nil {
			t.Errorf("check-in: %v", err)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		e, _, reg := resumptionEnv(t)
		v := e.EnrollNow("web1.example.com")
		conf := firstSession(t, e, v, time.Now)
		if _, err := e.Store.RevokeEnvoys(context.Background(), []store.Revocation{{UUID: v.UUID, Reason: "test", At: time.Now()}}); err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(t, e.Addr, conf); err == nil {
			t.Fatal("a revoked envoy's ticket let it in")
		}
		if n := resumptions(t, reg, "declined"); n != 1 {
			t.Errorf("declined resumptions = %v, want 1 (the ticket of a revoked envoy)", n)
		}
	})

	t.Run("renewed", func(t *testing.T) {
		e, _, reg := resumptionEnv(t)
		v := e.EnrollNow("web1.example.com")
		cache := firstSession(t, e, v, time.Now).ClientSessionCache
		// Renewed: a new certificate is current; the session in the cache
		// is the old one's.
		now := time.Now()
		renewed, err := e.CA.SignEnvoy(ca.EnvoyParams{PublicKey: v.Key.Public().(ed25519.PublicKey), Hostname: v.Hostname, UUID: v.UUID,
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Store.RenewCertificate(context.Background(), store.RenewParams{UUID: v.UUID, OldSerial: ca.SerialHex(v.Cert),
			NewSerial: ca.SerialHex(renewed), NotAfter: renewed.NotAfter, Audit: store.AuditEvent{At: now, Type: store.AuditEnvoyRenewed, Result: "ok"}}); err != nil {
			t.Fatal(err)
		}
		// The old session is declined and the client's full handshake,
		// with its new certificate, succeeds: no refusal, no loop.
		newConf := e.ClientTLS(renewed, v.Key)
		newConf.ClientSessionCache = cache
		if resumed, err := handshake(t, e.Addr, newConf); err != nil || resumed {
			t.Fatalf("after renewal: resumed %v, err %v; want a full handshake that succeeds", resumed, err)
		}
		if n := resumptions(t, reg, "declined"); n != 1 {
			t.Errorf("declined resumptions = %v, want 1 (the superseded certificate's ticket)", n)
		}
		// Presenting the superseded certificate in full is refused.
		old := e.ClientTLS(v.Cert, v.Key)
		if _, err := handshake(t, e.Addr, old); err == nil {
			t.Error("the superseded certificate was accepted")
		}
	})

	t.Run("expired", func(t *testing.T) {
		e, clk, reg := resumptionEnv(t)
		now := clk.Now()
		v := e.Enroll("web1.example.com", now.Add(-time.Hour), now.Add(10*time.Minute))
		conf := firstSession(t, e, v, clk.Now)
		clk.Advance(11 * time.Minute)
		if _, err := handshake(t, e.Addr, conf); err == nil {
			t.Fatal("a ticket outlived its certificate")
		}
		if n := resumptions(t, reg, "declined"); n != 1 {
			t.Errorf("declined resumptions = %v, want 1 (the ticket of an expired certificate)", n)
		}
	})

	t.Run("another server's ticket", func(t *testing.T) {
		e, _, reg := resumptionEnv(t)
		v := e.EnrollNow("web1.example.com")
		conf := firstSession(t, e, v, time.Now)
		// A restart is a new server: its ticket keys are new.
		e.Restart()
		if resumed, err := handshake(t, e.Addr, conf); err != nil || resumed {
			t.Fatalf("after a restart: resumed %v, err %v; want a full handshake that succeeds", resumed, err)
		}
		_ = reg // the restarted server registers no metrics
	})
}

// TestKeyExchangeOption: x25519 makes the check-in listener use X25519
// alone; the default prefers the hybrid post-quantum exchange.
func TestKeyExchangeOption(t *testing.T) {
	for _, tc := range []struct {
		kx   grpcapi.KeyExchange
		want tls.CurveID
	}{{"", tls.X25519MLKEM768}, {grpcapi.KeyExchangeX25519, tls.X25519}} {
		e := grpcapitest.New(t, grpcapitest.Options{Config: func(c *grpcapi.Config) { c.KeyExchange = tc.kx }})
		v := e.EnrollNow("web1.example.com")
		c, err := tls.Dial("tcp", e.Addr, e.ClientTLS(v.Cert, v.Key))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.ConnectionState().CurveID; got != tc.want {
			t.Errorf("key exchange %q: negotiated %v, want %v", tc.kx, got, tc.want)
		}
		c.Close()
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	e := grpcapitest.New(t, grpcapitest.Options{})
	e.Config(func(c grpcapi.Config) {
		c.KeyExchange, c.SigningKey = "rsa", key
		if _, err := grpcapi.New(c); err == nil {
			t.Error("an unknown key exchange was accepted")
		}
	})
}

// metricValue returns the value of an unlabelled gauge or counter, or of
// the series with label=value.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || (l.GetName() == label && l.GetValue() == value)
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}

// TestAgentResumesAndRenews (issue 19, item 1): the agent resumes its
// session when it reconnects, and after a renewal its next handshake is a
// full one with the new certificate (its session cache is bound to the
// certificate), not a ticket the server must decline.
func TestAgentResumesAndRenews(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := grpcapitest.New(t, grpcapitest.Options{IdleTimeout: 100 * time.Millisecond, Registerer: reg})
	// A certificate past two thirds of its life: due for renewal.
	now := time.Now()
	v := e.Enroll("laptop1.example.com", now.Add(-3*time.Hour), now.Add(time.Hour))
	a := e.Agent(v, agent.Config{})
	ctx := context.Background()
	checkinAfterIdleClose := func() {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for metricValue(t, reg, "vigo_grpc_connections", "", "") != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the idle connection was not closed")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := a.CheckinOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The first check-in renews the certificate (and reconnects); its
	// session was made with the old one.
	if _, err := a.CheckinOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Enrollment().Certificate().SerialNumber.Cmp(v.Cert.SerialNumber) == 0 {
		t.Fatal("the certificate was not renewed")
	}
	checkinAfterIdleClose() // a full handshake: no session for the new certificate
	if n := resumptions(t, reg, "accepted"); n != 0 {
		t.Fatalf("accepted resumptions = %v, want 0: the old certificate's session was resumed", n)
	}
	checkinAfterIdleClose() // resumes the new certificate's session
	if n := resumptions(t, reg, "accepted"); n != 1 {
		t.Errorf("accepted resumptions = %v, want 1 (the new certificate's session resumed)", n)
	}
	if n := resumptions(t, reg, "declined"); n != 0 {
		t.Errorf("declined resumptions = %v, want 0: the agent offered the old certificate's session", n)
	}
}
