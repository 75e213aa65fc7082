package fleetsim

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vigo-enroll/vigo/schemas/agentpb"
)

func TestParseServer(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:8443", "https://127.0.0.1:8443"},
		{"https://vigo.example.com", "https://vigo.example.com:8443"},
		{"https://[::1]:9443/ignored?x=1", "https://[::1]:9443"},
		{"http://vigo.example.com", ""},
		{"", ""},
	} {
		u, err := ParseServer(tc.in)
		got := ""
		if err == nil {
			got = u.String()
		}
		if got != tc.want {
			t.Errorf("ParseServer(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	p50, p99, mx := Percentiles(lat)
	if p50 != 51*time.Millisecond || p99 != 100*time.Millisecond || mx != 100*time.Millisecond {
		t.Errorf("Percentiles = %v, %v, %v", p50, p99, mx)
	}
	if a, b, c := Percentiles(nil); a+b+c != 0 {
		t.Errorf("Percentiles(nil) = %v, %v, %v", a, b, c)
	}
}

func TestParseRSS(t *testing.T) {
	status := "Name:\tvigosrv\nVmPeak:\t  900000 kB\nVmRSS:\t  123456 kB\nThreads:\t9\n"
	if got, err := parseProcStatus(strings.NewReader(status)); err != nil || got != 123456*1024 {
		t.Errorf("parseProcStatus = %d, %v", got, err)
	}
	if _, err := parseProcStatus(strings.NewReader("Name:\tx\n")); err == nil {
		t.Error("parseProcStatus without VmRSS: no error")
	}
	metrics := "# HELP process_resident_memory_bytes Resident memory size in bytes.\n" +
		"# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 5.4067e+07\nprocess_virtual_memory_bytes 1e9\nprocess_cpu_seconds_total 12.5\n"
	if got, err := parseMetrics(strings.NewReader(metrics)); err != nil || got != (sample{rss: 54067000, cpu: 12.5}) {
		t.Errorf("parseMetrics = %+v, %v", got, err)
	}
	if _, err := parseMetrics(strings.NewReader("go_goroutines 5\n")); err == nil {
		t.Error("parseMetrics without the metric: no error")
	}
	// The command name may hold spaces and parentheses; utime 150 and
	// stime 50 ticks are 2 s.
	stat := "4242 (vigo srv) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 9 0 1000 0 0"
	if got, err := parseProcStatCPU(stat); err != nil || got != 2 {
		t.Errorf("parseProcStatCPU = %v, %v; want 2", got, err)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 x 50 0"} {
		if _, err := parseProcStatCPU(bad); err == nil {
			t.Errorf("parseProcStatCPU(%q): no error", bad)
		}
	}
}

// TestOwnRSS reads this process's /proc status, where there is one.
func TestOwnRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc on this system")
	}
	// Use some CPU first: /proc counts it in 10 ms ticks.
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	got, err := procRSS(os.Getpid()).sample(t.Context())
	if err != nil || got.rss <= 0 || got.cpu <= 0 {
		t.Errorf("procRSS(self) = %+v, %v", got, err)
	}
}

func TestStateRoundTrip(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	want := &State{CA: []byte("ca-der"), Envoys: []*Envoy{{
		UUID: "u1", Hostname: "sim-1.bench.test", Key: key, Cert: []byte("cert-der"),
		Server: "https://127.0.0.1:8443", GRPCAddress: "127.0.0.1:1530", ServerPublicKey: pub,
	}}}
	path := filepath.Join(t.TempDir(), "state.json")
	if err := want.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode = %v, want 0600 (it holds private keys)", fi.Mode().Perm())
	}
	got, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(Envoy{})); diff != "" {
		t.Errorf("state round trip (-want +got):\n%s", diff)
	}
	if err := os.WriteFile(path, []byte(`{"version":2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadState(path); err == nil {
		t.Error("LoadState of version 2: no error")
	}
}

// TestSignCheckin checks that a simulated check-in is what the server
// verifies: signed by the envoy's key over the canonical bytes, with a
// fresh nonce each time.
func TestSignCheckin(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	srvPub, srvKey, _ := ed25519.GenerateKey(rand.Reader)
	e := &Envoy{UUID: "u1", Hostname: "h.bench.test", Key: key, ServerPublicKey: srvPub}
	a, b := e.SignCheckin(time.Now()), e.SignCheckin(time.Now())
	if !ed25519.Verify(pub, a.SigningBytes(), a.GetSignature()) {
		t.Error("check-in signature does not verify")
	}
	if len(a.GetNonce()) != agentpb.NonceSize || string(a.GetNonce()) == string(b.GetNonce()) {
		t.Error("nonces are not fresh 16-byte values")
	}
	resp := &agentpb.CheckinResponse{Uuid: "u1", RequestNonce: a.GetNonce(), ServerTimeUnixNano: 1}
	resp.Signature = ed25519.Sign(srvKey, resp.SigningBytes())
	if err := e.VerifyResponse(a, resp); err != nil {
		t.Errorf("VerifyResponse(genuine) = %v", err)
	}
	if err := e.VerifyResponse(b, resp); err == nil {
		t.Error("VerifyResponse accepted the answer to another request")
	}
	resp.NextCheckinMillis = 5 // not what was signed
	if err := e.VerifyResponse(a, resp); err == nil {
		t.Error("VerifyResponse accepted a tampered answer")
	}
}

// TestImports keeps the simulator a client: it may import the wire
// contracts, gRPC and the standard library, never the server, the policy
// engine, Git sync, CUE or a database driver.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{
			"github.com/vigo-enroll/vigo/server", "github.com/vigo-enroll/vigo/policy", "github.com/vigo-enroll/vigo/gitsync",
			"cuelang.org/", "modernc.org/sqlite", "github.com/jackc/pgx", "github.com/go-git/",
		} {
			if strings.HasPrefix(dep, bad) {
				t.Errorf("fleetsim depends on %s", dep)
			}
		}
	}
}
