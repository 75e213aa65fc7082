package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigo-enroll/vigo/agent/fleetsim"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
	"github.com/vigo-enroll/vigo/server/store"
)

// The replica tests run two servers on loopback sharing one PostgreSQL
// schema (see servertest.StartReplicas); they are skipped without
// VIGO_TEST_POSTGRES_DSN. Run them with:
//
//	bash .ci/postgres.sh run go test -run Replica ./server/

// registerOn registers id on in and returns the status and the decoded
// answer.
func registerOn(t *testing.T, in *servertest.Instance, req apiv1.RegisterRequest) (int, apiv1.RegisterResponse, string) {
	t.Helper()
	code, body := in.Register(t, req)
	var out apiv1.RegisterResponse
	if code == http.StatusOK {
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("decode register answer: %v", err)
		}
	}
	return code, out, servertest.ErrorOf(body)
}

// registerSlow posts a registration from a test goroutine (no t.Fatal)
// with a patient client: 200 concurrent token checks (bcrypt) take a
// while on a small machine, longer under -race.
func registerSlow(in *servertest.Instance, req apiv1.RegisterRequest) (int, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	c := &http.Client{Timeout: 10 * time.Minute, Transport: in.Client.Transport}
	resp, err := c.Post(in.URL+"/api/v1/bootstrap/register", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("register %s: %w", req.Hostname, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// TestReplicaTokensUsedOnce: 200 concurrent registrations with 50 tokens,
// each token tried by 4 hosts, spread over both replicas, enroll exactly
// 50 envoys, one per token; both replicas audit under their own name.
func TestReplicaTokensUsedOnce(t *testing.T) {
	rs := servertest.StartReplicas(t, 2, servertest.Options{})
	const tokens, perToken = 50, 4
	type attempt struct {
		in  *servertest.Instance
		req apiv1.RegisterRequest
		tok string
	}
	var attempts []attempt
	for i := range tokens {
		tok := rs[i%2].Token(t, fmt.Sprintf("t%d-*.tok.test", i), "1h")
		for k := range perToken {
			req := servertest.NewIdentity(t, fmt.Sprintf("t%d-%d.tok.test", i, k)).Req
			req.Token = tok.Token
			attempts = append(attempts, attempt{in: rs[(i+k)%2], req: req, tok: tok.ID})
		}
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok       = map[string]int{} // token id -> successes
		statuses = map[int]int{}
	)
	for _, a := range attempts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := registerSlow(a.in, a.req)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			statuses[code]++
			if code == http.StatusOK {
				ok[a.tok]++
			}
		}()
	}
	wg.Wait()
	if statuses[http.StatusOK] != tokens {
		t.Errorf("successful registrations = %d, want %d (statuses %v)", statuses[http.StatusOK], tokens, statuses)
	}
	for id, n := range ok {
		if n != 1 {
			t.Errorf("token %s enrolled %d envoys", id, n)
		}
	}
	for code := range statuses {
		if code != http.StatusOK && code/100 != 4 {
			t.Errorf("HTTP %d among the answers: a lost race must be a refusal, not a failure", code)
		}
	}
	active, err := rs[0].Store().ListEnvoys(t.Context(), store.EnvoyFilter{Status: store.StatusActive})
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != tokens {
		t.Errorf("active envoys in the database = %d, want %d", len(active), tokens)
	}
	evs, err := rs[0].Store().ListAudit(t.Context(), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]int{}
	for _, e := range evs {
		if e.Type == store.AuditRegistration && e.Result == "allowed" {
			by[e.Replica]++
		}
	}
	if by["replica-1"] == 0 || by["replica-2"] == 0 || by["replica-1"]+by["replica-2"] != tokens {
		t.Errorf("successful registrations audited per replica = %v; want both replicas, %d in all", by, tokens)
	}
}

// TestReplicaHostnameOnce: the same hostname registering on both replicas
// at once leaves exactly one active envoy.
func TestReplicaHostnameOnce(t *testing.T) {
	rs := servertest.StartReplicas(t, 2, servertest.Options{})
	const n = 20
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for i := range n {
		req := servertest.NewIdentity(t, "same.approved.test").Req
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := registerSlow(rs[i%2], req)
			if err != nil {
				t.Error(err)
			}
			codes <- code
		}()
	}
	wg.Wait()
	close(codes)
	okCount := 0
	for c := range codes {
		switch {
		case c == http.StatusOK:
			okCount++
		case c/100 != 4:
			t.Errorf("HTTP %d: a lost race must be a refusal", c)
		}
	}
	if okCount != 1 {
		t.Errorf("successful registrations = %d, want 1", okCount)
	}
	es, err := rs[1].Store().ListEnvoys(t.Context(), store.EnvoyFilter{Hostname: "same.approved.test", Status: store.StatusActive})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 {
		t.Errorf("active envoys named same.approved.test = %d, want 1", len(es))
	}
}

// replicaEnvoy registers hostname on rs[0] and opens a check-in
// connection as that envoy to every replica.
func replicaEnvoy(t *testing.T, rs []*servertest.Instance, hostname string) (*fleetsim.Envoy, []*grpc.ClientConn) {
	t.Helper()
	id := servertest.NewIdentity(t, hostname)
	code, resp, msg := registerOn(t, rs[0], id.Req)
	if code != http.StatusOK {
		t.Fatalf("register %s: HTTP %d %s", hostname, code, msg)
	}
	e, _, err := fleetsim.EnvoyFromRegistration(&resp, id.Key, rs[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	var conns []*grpc.ClientConn
	for _, in := range rs {
		cc, err := fleetsim.Dial(t.Context(), e, in.CAPool(), in.GRPCAddr().String())
		if err != nil {
			t.Fatalf("dial %s: %v", in.GRPCAddr(), err)
		}
		t.Cleanup(func() { cc.Close() })
		conns = append(conns, cc)
	}
	return e, conns
}

// TestReplicaReplayRefused: a check-in accepted by one replica and
// replayed, byte for byte, to the other is refused.
func TestReplicaReplayRefused(t *testing.T) {
	rs := servertest.StartReplicas(t, 2, servertest.Options{})
	e, conns := replicaEnvoy(t, rs, "replay.approved.test")
	req := e.SignCheckin(time.Now())
	if _, err := fleetsim.Checkin(t.Context(), conns[0], e, req); err != nil {
		t.Fatalf("check-in on replica-1: %v", err)
	}
	_, err := fleetsim.Checkin(t.Context(), conns[0], e, req)
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("replay to the same replica: %v; want Unauthenticated", err)
	}
	_, err = fleetsim.Checkin(t.Context(), conns[1], e, req)
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("replay to the other replica: %v; want Unauthenticated (the replay cache must be shared: store.SeenNonce)", err)
	}
	// A fresh check-in is still welcome on the other replica.
	if _, err := fleetsim.Checkin(t.Context(), conns[1], e, e.SignCheckin(time.Now())); err != nil {
		t.Errorf("fresh check-in on replica-2: %v", err)
	}
}

// TestReplicaPolicyRevocation: both replicas watch one policy folder; a
// revocation added there converges on both (same revision, each status
// naming its replica), the envoy's check-ins are refused by both, and
// last_seen written by both replicas' batches is the latest check-in.
func TestReplicaPolicyRevocation(t *testing.T) {
	rs := servertest.StartReplicas(t, 2, servertest.Options{Config: func(c *server.Config) { c.Server.ReplicaRefresh = server.Duration(time.Second) }})
	e, conns := replicaEnvoy(t, rs, "rev.approved.test")
	var last time.Time
	for i, cc := range conns {
		req := e.SignCheckin(time.Now())
		if _, err := fleetsim.Checkin(t.Context(), cc, e, req); err != nil {
			t.Fatalf("check-in on replica-%d: %v", i+1, err)
		}
		last = time.Unix(0, req.GetTimestampUnixNano())
	}
	// Batched last_seen: both replicas write theirs; the later one wins.
	waitFor(t, "last_seen of both replicas' check-ins", func() (bool, string) {
		got, err := rs[0].Store().GetEnvoy(t.Context(), e.UUID)
		if err != nil {
			return false, err.Error()
		}
		// The server stamps its own clock, not the envoy's: it is at or
		// after the last request was signed.
		return !got.LastSeen.Before(last.Add(-time.Second)), fmt.Sprintf("last_seen %v, last check-in %v", got.LastSeen, last)
	})

	before := policyStatus(t, rs[0]).Active.Revision
	revoked := servertest.DefaultPolicy + `revocations: [{hostname: "rev.approved.test", reason: "stolen laptop"}]` + "\n"
	revoked = strings.Replace(revoked, `revocations: [{hostname: "gone.approved.test", reason: "decommissioned"}]`+"\n", "", 1)
	if err := os.WriteFile(filepath.Join(rs[0].PolicyDir, "policy.cue"), []byte(revoked), 0o644); err != nil {
		t.Fatal(err)
	}
	var revs [2]string
	for i, in := range rs {
		waitFor(t, fmt.Sprintf("replica-%d applies the new policy", i+1), func() (bool, string) {
			st := policyStatus(t, in)
			if st.Active != nil {
				revs[i] = st.Active.Revision
			}
			if st.Replica != fmt.Sprintf("replica-%d", i+1) {
				t.Fatalf("policy status of replica-%d names %q", i+1, st.Replica)
			}
			return revs[i] != "" && revs[i] != before, "revision " + revs[i]
		})
	}
	if revs[0] != revs[1] {
		t.Errorf("replicas converged on different revisions: %s and %s", revs[0], revs[1])
	}
	for i, cc := range conns {
		waitFor(t, fmt.Sprintf("replica-%d refuses the revoked envoy", i+1), func() (bool, string) {
			_, err := fleetsim.Checkin(t.Context(), cc, e, e.SignCheckin(time.Now()))
			switch status.Code(err) {
			case codes.PermissionDenied, codes.Unauthenticated:
				return true, ""
			case codes.OK:
				return false, "check-in accepted"
			}
			return false, err.Error()
		})
		// And a new connection cannot even be established and used.
		cc2, err := fleetsim.Dial(t.Context(), e, rs[i].CAPool(), rs[i].GRPCAddr().String())
		if err == nil {
			_, err = fleetsim.Checkin(t.Context(), cc2, e, e.SignCheckin(time.Now()))
			cc2.Close()
		}
		if err == nil {
			t.Errorf("replica-%d: a new connection of the revoked envoy checked in", i+1)
		}
	}
	got, err := rs[1].Store().GetEnvoy(t.Context(), e.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusRevoked || got.RevokedRevision != revs[0] {
		t.Errorf("envoy status %s, revoked by revision %q; want revoked by %s", got.Status, got.RevokedRevision, revs[0])
	}
}

// waitFor polls cond until it holds, failing the test after a generous
// minute (the bound of a cross-replica change is the gRPC server's
// refresh interval, 10s by default).
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var last string
	for {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: gave up after a minute (last: %s)", what, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
