package server_test

import (
	"crypto/ed25519"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/policy/sandbox"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/agentdist"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// The end-to-end tests run the real agent binary, built once per test
// binary and version (servertest.AgentBinary), against a real server, and
// the real bootstrap script through a real shell, as the one-liner does.

func TestMain(m *testing.M) {
	sandbox.RunIfChild() // the servers of these tests evaluate policy in a child: this binary
	code := m.Run()
	servertest.RemoveAgentBinaries()
	os.Exit(code)
}

// e2e is a server with an agent distribution and helpers to enroll hosts
// under temporary prefixes.
type e2e struct {
	*servertest.Instance
	distDir string
	build   string // the v1.0.0 build
}

// newE2E builds the agent (v1.0.0), serves it, signed by signer when not
// nil, and starts a server with the default test policy.
func newE2E(t testing.TB, signer ed25519.PrivateKey, edit func(*server.Config)) *e2e {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the agent and runs it against a server")
	}
	e := &e2e{distDir: t.TempDir(), build: servertest.AgentBinary(t, "v1.0.0")}
	servertest.WriteDist(t, e.distDir, e.build, "v1.0.0", signer)
	e.Instance = servertest.Start(t, servertest.Options{Config: func(c *server.Config) {
		c.Agent.DistDir = e.distDir
		if edit != nil {
			edit(c)
		}
	}})
	return e
}

func needTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (apt-get install %s): the one-liner needs it", name, name)
	}
}

// host is an enrolled (or to be enrolled) host under a prefix.
type host struct {
	prefix, bin, conf string
}

func newHost(t testing.TB) host {
	p := t.TempDir()
	return host{prefix: p, bin: filepath.Join(p, "usr/local/bin/vigo"), conf: filepath.Join(p, "etc/vigo-envoy")}
}

func (h host) file(t testing.TB) agent.File {
	t.Helper()
	f, err := agent.ReadFile(h.conf)
	if err != nil {
		t.Fatalf("read the enrollment: %v", err)
	}
	return f
}

// bootstrap runs the one-liner for h with the no-service flags.
func (e *e2e) bootstrap(t testing.TB, shell []string, h host, args ...string) servertest.Result {
	t.Helper()
	return e.Bootstrap(t, shell, append([]string{"--prefix", h.prefix, "--no-service"}, args...)...)
}

// runOnce runs `vigo run --once` with h's binary.
func (h host) runOnce(t *testing.T) servertest.Result {
	t.Helper()
	return servertest.Exec(t, nil, h.bin, "run", "--once", "--config-dir", h.conf)
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Equal(x, y)
}

func assertNotInstalled(t *testing.T, h host) {
	t.Helper()
	for _, p := range []string{h.bin, h.conf} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists after a failed bootstrap (err %v)", p, err)
		}
	}
}

// shells are the shells the one-liner is tried with: sh, and dash and
// busybox sh when installed.
func shells(t *testing.T) [][]string {
	out := [][]string{{"sh"}}
	if _, err := exec.LookPath("dash"); err == nil {
		out = append(out, []string{"dash"})
	} else {
		t.Log("dash is not installed: not tried")
	}
	if _, err := exec.LookPath("busybox"); err == nil {
		out = append(out, []string{"busybox", "sh"})
	} else {
		t.Log("busybox is not installed: not tried")
	}
	return out
}

func TestE2EBootstrapEnrollsAndChecksIn(t *testing.T) {
	needTool(t, "curl")
	e := newE2E(t, nil, nil)
	for _, sh := range shells(t) {
		name := strings.Join(sh, "-")
		t.Run(name, func(t *testing.T) {
			h := newHost(t)
			hostname := "web-" + name + ".example.com"
			tok := e.Token(t, hostname, "")
			r := e.bootstrap(t, sh, h, "--token", tok.Token, "--hostname", hostname)
			if r.Code != 0 {
				t.Fatalf("bootstrap: %s", r)
			}
			for _, want := range []string{"==> [3/6] download the agent for ", "==> [4/6] verify the agent's SHA-256\n    vigo v1.0.0, sha256 ",
				"registered " + hostname + " as envoy ", "this host is enrolled", "==> done: this host is a Vigo envoy"} {
				if !strings.Contains(r.Stdout, want) {
					t.Errorf("stdout lacks %q\n%s", want, r)
				}
			}
			if strings.Contains(r.Stdout+r.Stderr, tok.Token) {
				t.Error("the bootstrap printed the token")
			}

			// The verified agent, the configuration, the key and the certificates.
			if !sameFile(t, h.bin, e.build) {
				t.Error("the installed agent is not the served build")
			}
			for path, want := range map[string]os.FileMode{
				h.bin: 0o755, h.conf: 0o700, filepath.Join(h.conf, agent.KeyName): 0o600,
				filepath.Join(h.conf, agent.CertName): 0o644, filepath.Join(h.conf, agent.CAName): 0o644,
			} {
				if got := mode(t, path); got != want {
					t.Errorf("mode of %s: %v, want %v", path, got, want)
				}
			}
			f := h.file(t)
			if f.Hostname != hostname || f.ServerURL != e.URL || f.AgentSigningKey != "" {
				t.Errorf("enrollment: %+v", f)
			}

			r = h.runOnce(t)
			if r.Code != 0 || !strings.Contains(r.Stdout, "checked in as envoy "+f.UUID+" (agent v1.0.0)") {
				t.Fatalf("run --once: %s", r)
			}
			env := e.WaitEnvoy(t, f.UUID, func(e apiv1.Envoy) bool { return e.LastSeen != nil && e.AgentVersion == "v1.0.0" })
			if env.Status != "active" || env.Method != "token" || env.TokenID != tok.ID || env.Hostname != hostname {
				t.Errorf("envoy record: %+v", env)
			}
		})
	}
}

func TestE2EBootstrapRefusesATamperedBinary(t *testing.T) {
	needTool(t, "curl")
	e := newE2E(t, nil, nil)
	served := filepath.Join(e.distDir, servertest.DistName(runtime.GOOS, runtime.GOARCH))
	fi, err := os.Stat(served)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(served)
	if err != nil {
		t.Fatal(err)
	}

	// Tampered behind the server's back: same size and modification
	// time, so the server still announces the digest of the manifest;
	// the script's SHA-256 check is the line of defence.
	t.Run("same size and time", func(t *testing.T) {
		bad := slices.Clone(orig)
		bad[len(bad)/2] ^= 0xff
		if err := os.WriteFile(served, bad, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(served, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		h := newHost(t)
		r := e.bootstrap(t, []string{"sh"}, h, "--hostname", "tampered.trusted.test")
		if r.Code == 0 {
			t.Fatalf("bootstrap succeeded with a tampered binary: %s", r)
		}
		for _, want := range []string{"vigo-bootstrap: error: step 4/6 (verify the agent's SHA-256): SHA-256 mismatch: downloaded ",
			"; the download was removed", "vigo-bootstrap: rolled back: removed " + h.bin} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("stderr lacks %q\n%s", want, r)
			}
		}
		assertNotInstalled(t, h)
	})

	// Replaced in the ordinary way (new modification time): the server
	// re-hashes it, finds that it no longer matches the manifest and stops
	// serving it, so the script already stops at the download.
	t.Run("replaced", func(t *testing.T) {
		bad := append(slices.Clone(orig), "tampered"...)
		if err := os.WriteFile(served, bad, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(served, time.Now(), fi.ModTime().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		h := newHost(t)
		r := e.bootstrap(t, []string{"sh"}, h, "--hostname", "tampered.trusted.test")
		if r.Code == 0 {
			t.Fatalf("bootstrap succeeded with a tampered binary: %s", r)
		}
		for _, want := range []string{"vigo-bootstrap: error: step 3/6 (download the agent for ", "HTTP 404 from ", "no agent build for "} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("stderr lacks %q\n%s", want, r)
			}
		}
		assertNotInstalled(t, h)
	})
}

func TestE2EBootstrapBadToken(t *testing.T) {
	needTool(t, "curl")
	e := newE2E(t, nil, nil)
	tok := e.Token(t, "web9.example.com", "")
	// A typo in the secret.
	last := tok.Token[len(tok.Token)-1]
	typo := tok.Token[:len(tok.Token)-1] + map[bool]string{true: "B", false: "A"}[last == 'A']
	h := newHost(t)
	r := e.bootstrap(t, []string{"sh"}, h, "--token", typo, "--hostname", "web9.example.com")
	if r.Code == 0 {
		t.Fatalf("bootstrap with a bad token succeeded: %s", r)
	}
	for _, want := range []string{"refused: ", "token is not valid", "vigo-bootstrap: error: step 5/6 (register with " + e.URL + "): vigo register failed (its message is above)"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr lacks %q\n%s", want, r)
		}
	}
	if strings.Contains(r.Stdout+r.Stderr, typo) {
		t.Error("the bootstrap printed the token")
	}
	assertNotInstalled(t, h)
	// The real token is still unused.
	code, body := e.Do(t, http.MethodGet, "/api/v1/tokens", nil, true)
	if toks := decode[[]apiv1.Token](t, body); code != 200 || len(toks) != 1 || toks[0].State != "unused" {
		t.Errorf("tokens: HTTP %d %s", code, body)
	}
}

func TestE2EBootstrapAgainReenrolls(t *testing.T) {
	needTool(t, "curl")
	e := newE2E(t, nil, nil)
	h := newHost(t)
	if r := e.bootstrap(t, []string{"sh"}, h, "--hostname", "again.trusted.test"); r.Code != 0 {
		t.Fatalf("first bootstrap: %s", r)
	}
	first := h.file(t)
	if r := h.runOnce(t); r.Code != 0 {
		t.Fatalf("run --once: %s", r)
	}
	if r := e.bootstrap(t, []string{"sh"}, h, "--hostname", "again.trusted.test"); r.Code != 0 {
		t.Fatalf("second bootstrap: %s", r)
	}
	second := h.file(t)
	if second.UUID == first.UUID {
		t.Fatal("the second bootstrap kept the uuid")
	}
	if r := h.runOnce(t); r.Code != 0 || !strings.Contains(r.Stdout, second.UUID) {
		t.Fatalf("run --once after the second bootstrap: %s", r)
	}
	old := e.Envoy(t, first.UUID)
	if old.Status != "revoked" || old.RevokedReason != "replaced" {
		t.Errorf("old envoy: status %q reason %q, want revoked, replaced", old.Status, old.RevokedReason)
	}
	if cur := e.Envoy(t, second.UUID); cur.Status != "active" {
		t.Errorf("new envoy: status %q", cur.Status)
	}
}

// TestE2ERegisterThenRevokedByPolicy is issue 4's flow against the real
// server: vigo register, vigo run --once, then a revocation in the policy
// folder makes the same command fail with the revocation exit status.
func TestE2ERegisterThenRevokedByPolicy(t *testing.T) {
	e := newE2E(t, nil, nil)
	dir := filepath.Join(t.TempDir(), "etc")
	tok := e.Token(t, "web1.example.com", "")
	port := strconv.Itoa(e.APIAddr().(*net.TCPAddr).Port)
	r := servertest.Exec(t, nil, e.build, "register", "--server", "127.0.0.1:"+port, "--token", tok.Token,
		"--config-dir", dir, "--hostname", "web1.example.com")
	if r.Code != 0 || !strings.Contains(r.Stdout, "this host is enrolled") {
		t.Fatalf("register: %s", r)
	}
	if strings.Contains(r.Stdout+r.Stderr, tok.Token) {
		t.Error("vigo register printed the token")
	}
	f, err := agent.ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	runOnce := func() servertest.Result {
		return servertest.Exec(t, nil, e.build, "run", "--once", "--config-dir", dir)
	}
	if r := runOnce(); r.Code != 0 {
		t.Fatalf("run --once: %s", r)
	}

	rev := e.WritePolicy(t, strings.Replace(servertest.DefaultPolicy,
		`revocations: [{hostname: "gone.approved.test", reason: "decommissioned"}]`,
		`revocations: [{hostname: "gone.approved.test", reason: "decommissioned"}, {hostname: "web1.example.com", reason: "disk stolen"}]`, 1))

	// The controller activates a revision once its revocations are stored.
	if st := e.PolicyStatus(t); st.Active == nil || st.Active.Revision != rev {
		t.Fatalf("policy %s not active after WritePolicy: %+v", rev, st.Active)
	}
	r = runOnce()
	if r.Code != agent.ExitRevoked {
		t.Fatalf("run --once after the revocation: exit %d, want %d\n%s", r.Code, agent.ExitRevoked, r)
	}
	// The handshake refusal carries no reason; the agent asks the server
	// and shows the revocation message.
	if want := "envoy " + f.UUID + " is revoked: disk stolen (policy local@sha256:" + strings.TrimPrefix(rev, "local@sha256:")[:7] + ")"; !strings.Contains(r.Stderr, want) {
		t.Errorf("stderr lacks %q\n%s", want, r)
	}
	env := e.Envoy(t, f.UUID)
	if env.Status != "revoked" || env.RevokedReason != "disk stolen" || env.RevokedRevision != rev {
		t.Errorf("envoy: status %q reason %q revision %q, want revoked, disk stolen, %s", env.Status, env.RevokedReason, env.RevokedRevision, rev)
	}
}

func TestE2ERebootstrapThroughTheAdminAPI(t *testing.T) {
	e := newE2E(t, nil, nil)
	dir := filepath.Join(t.TempDir(), "etc")
	r := servertest.Exec(t, nil, e.build, "register", "--server", e.URL, "--config-dir", dir, "--hostname", "rb.trusted.test")
	if r.Code != 0 {
		t.Fatalf("register: %s", r)
	}
	before, err := agent.ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	code, body := e.Do(t, http.MethodPost, "/api/v1/envoys/"+before.UUID+"/rebootstrap", nil, true)
	if code != http.StatusOK || !decode[apiv1.Envoy](t, body).Rebootstrap {
		t.Fatalf("rebootstrap: HTTP %d %s", code, body)
	}
	r = servertest.Exec(t, nil, e.build, "run", "--once", "--config-dir", dir)
	if r.Code != 0 {
		t.Fatalf("run --once: %s", r)
	}
	after, err := agent.ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if after.UUID == before.UUID || !strings.Contains(r.Stdout, after.UUID) {
		t.Fatalf("uuid before %s, after %s; run --once said:\n%s", before.UUID, after.UUID, r)
	}
	old := e.Envoy(t, before.UUID)
	if old.Status != "revoked" || old.RevokedReason != "rebootstrapped" || old.ReplacedBy != after.UUID {
		t.Errorf("old envoy: %+v", old)
	}
	if r := servertest.Exec(t, nil, e.build, "run", "--once", "--config-dir", dir); r.Code != 0 {
		t.Fatalf("run --once with the new identity: %s", r)
	}
	if cur := e.WaitEnvoy(t, after.UUID, func(e apiv1.Envoy) bool { return e.LastSeen != nil }); cur.Status != "active" || cur.Rebootstrap {
		t.Errorf("new envoy: %+v", cur)
	}
}

func TestE2ESelfUpdate(t *testing.T) {
	needTool(t, "curl")
	keyA, pubA := signingKey(t)
	keyB, _ := signingKey(t)
	// No fleet-wide agent.version: the per-envoy flag alone
	// (POST /api/v1/envoys/{uuid}/update) moves an envoy to a served build.
	e := newE2E(t, keyA, nil)
	v110 := servertest.AgentBinary(t, "v1.1.0")

	// Two hosts enroll while key A signs the builds: both pin it.
	good, other := newHost(t), newHost(t)
	for i, h := range []host{good, other} {
		if r := e.bootstrap(t, []string{"sh"}, h, "--hostname", "upd"+strconv.Itoa(i)+".trusted.test"); r.Code != 0 {
			t.Fatalf("bootstrap: %s", r)
		}
		if f := h.file(t); f.AgentSigningKey != string(pubA) {
			t.Fatalf("pinned signing key %q, want key A", f.AgentSigningKey)
		}
		if r := h.runOnce(t); r.Code != 0 || !strings.Contains(r.Stdout, "(agent v1.0.0)") {
			t.Fatalf("run --once: %s", r)
		}
	}
	flag := func(h host) {
		t.Helper()
		code, body := e.Do(t, http.MethodPost, "/api/v1/envoys/"+h.file(t).UUID+"/update", apiv1.EnvoyUpdateRequest{Version: "v1.1.0"}, true)
		if code != http.StatusOK || decode[apiv1.Envoy](t, body).UpdateVersion != "v1.1.0" {
			t.Fatalf("flag update: HTTP %d %s", code, body)
		}
	}

	// v1.1.0 signed by another key: refused, the binary stays.
	servertest.WriteDist(t, e.distDir, v110, "v1.1.0", keyB)
	flag(other)
	r := other.runOnce(t)
	if r.Code == 0 || !strings.Contains(r.Stderr, "update to v1.1.0: update agent v1.0.0 to v1.1.0: server serves a signing key other than the one pinned at registration") {
		t.Errorf("run --once with a build signed by another key: %s", r)
	}
	if !sameFile(t, other.bin, e.build) {
		t.Error("the binary changed although the build was signed by another key")
	}
	if _, err := os.Stat(other.bin + ".previous"); !os.IsNotExist(err) {
		t.Errorf("%s.previous exists after a refused update (err %v)", other.bin, err)
	}

	// v1.1.0 signed by the pinned key: replaced, previous kept, and the new
	// binary checks in once more, reporting its version.
	servertest.WriteDist(t, e.distDir, v110, "v1.1.0", keyA)
	flag(good)
	r = good.runOnce(t)
	if r.Code != 0 || !strings.Contains(r.Stdout, "checked in as envoy "+good.file(t).UUID+" (agent v1.1.0)") {
		t.Fatalf("run --once with an update: %s", r)
	}
	if !sameFile(t, good.bin, v110) {
		t.Error("the binary was not replaced by v1.1.0")
	}
	if !sameFile(t, good.bin+".previous", e.build) {
		t.Error("the previous binary was not kept as .previous")
	}
	if got := mode(t, good.bin); got != 0o755 {
		t.Errorf("mode of the updated binary: %v", got)
	}
	if r := servertest.Exec(t, nil, good.bin, "version"); !strings.HasPrefix(r.Stdout, "vigo v1.1.0 (") {
		t.Errorf("vigo version after the update: %s", r)
	}
	e.WaitEnvoy(t, good.file(t).UUID, func(e apiv1.Envoy) bool { return e.AgentVersion == "v1.1.0" })
	// Nothing more to do at the next check-in.
	if r := good.runOnce(t); r.Code != 0 || !strings.Contains(r.Stdout, "(agent v1.1.0)") {
		t.Fatalf("run --once after the update: %s", r)
	}
}

func signingKey(t *testing.T) (ed25519.PrivateKey, []byte) {
	t.Helper()
	privPEM, pubPEM, err := agentdist.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := agentdist.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pubPEM
}

// BenchmarkBootstrapOneLiner measures the whole one-liner on loopback:
// curl | sh, the agent's download and SHA-256 check, the registration and
// the first check-in that vigo register makes. Run it with -benchtime 5x;
// it also reports the median.
func BenchmarkBootstrapOneLiner(b *testing.B) {
	needTool(b, "curl")
	e := newE2E(b, nil, nil)
	var times []time.Duration
	for b.Loop() {
		h := newHost(b)
		start := time.Now()
		r := e.bootstrap(b, []string{"sh"}, h, "--hostname", "bench.trusted.test")
		times = append(times, time.Since(start))
		if r.Code != 0 {
			b.Fatalf("bootstrap: %s", r)
		}
	}
	slices.Sort(times)
	b.ReportMetric(times[len(times)/2].Seconds(), "median-s")
}

// TestIssue12Item3E2ESignedUpdates runs the real agent against a real
// server through the signed-update rules of issue 12 item 3:
//   - enrolled while the server signed nothing (no key pinned), the agent
//     meets a signed build: it fetches the server's key over mTLS,
//     verifies the build's signed statement with it, pins the key and
//     installs the build;
//   - a rollback to the older signed build is refused by the server
//     without --allow-downgrade (the agent would refuse it too), and
//     installed with it: the consent travels in the signed check-in
//     answer to the agent.
func TestIssue12Item3E2ESignedUpdates(t *testing.T) {
	needTool(t, "curl")
	keyA, pubA := signingKey(t)
	e := newE2E(t, nil, nil) // v1.0.0, unsigned
	v110 := servertest.AgentBinary(t, "v1.1.0")

	h := newHost(t)
	if r := e.bootstrap(t, []string{"sh"}, h, "--hostname", "pin.trusted.test"); r.Code != 0 {
		t.Fatalf("bootstrap: %s", r)
	}
	if f := h.file(t); f.AgentSigningKey != "" {
		t.Fatalf("a signing key was pinned although the server had none: %q", f.AgentSigningKey)
	}
	uuid := h.file(t).UUID
	update := func(version string, allow bool) (int, []byte) {
		t.Helper()
		return e.Do(t, http.MethodPost, "/api/v1/envoys/"+uuid+"/update", apiv1.EnvoyUpdateRequest{Version: version, AllowDowngrade: allow}, true)
	}

	// Signed v1.1.0: verified with the served key, which is then pinned.
	servertest.WriteDist(t, e.distDir, v110, "v1.1.0", keyA)
	if code, body := update("v1.1.0", false); code != http.StatusOK {
		t.Fatalf("update v1.1.0: HTTP %d %s", code, body)
	}
	if r := h.runOnce(t); r.Code != 0 || !strings.Contains(r.Stdout, "(agent v1.1.0)") {
		t.Fatalf("run --once with a signed update: %s", r)
	}
	if !sameFile(t, h.bin, v110) {
		t.Fatal("the binary was not replaced by v1.1.0")
	}
	if f := h.file(t); f.AgentSigningKey != string(pubA) {
		t.Fatalf("pinned signing key %q, want the served key A", f.AgentSigningKey)
	}
	e.WaitEnvoy(t, uuid, func(e apiv1.Envoy) bool { return e.AgentVersion == "v1.1.0" })

	// Back to v1.0.0, signed by the pinned key: a downgrade.
	servertest.WriteDist(t, e.distDir, e.build, "v1.0.0", keyA)
	code, body := update("v1.0.0", false)
	if code != http.StatusConflict || !strings.Contains(string(body), "newer than v1.0.0") || !strings.Contains(string(body), "--allow-downgrade") {
		t.Fatalf("downgrade without consent: HTTP %d %s", code, body)
	}
	if code, body := update("v1.0.0", true); code != http.StatusOK || !decode[apiv1.Envoy](t, body).UpdateAllowDowngrade {
		t.Fatalf("downgrade with consent: HTTP %d %s", code, body)
	}
	if r := h.runOnce(t); r.Code != 0 || !strings.Contains(r.Stdout, "(agent v1.0.0)") {
		t.Fatalf("run --once with an allowed downgrade: %s", r)
	}
	if r := servertest.Exec(t, nil, h.bin, "version"); !strings.HasPrefix(strings.TrimSpace(r.Stdout), "vigo v1.0.0 ") {
		t.Errorf("vigo version after the rollback: %s", r)
	}
}
