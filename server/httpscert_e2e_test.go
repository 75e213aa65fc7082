package server_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// operatorCert starts a server whose HTTPS listener presents a certificate
// from pub (standing in for Let's Encrypt), copied to files of its own.
// operatorServerWithAgent starts a server whose HTTPS listener has an
// operator's certificate from a public CA, serving agent build v1.0.0
// from the returned folder.
func operatorServerWithAgent(t *testing.T) (*servertest.Instance, servertest.PublicCA, string) {
	t.Helper()
	pub := servertest.NewPublicCA(t)
	_, _, edit := operatorCert(t, pub)
	distDir := t.TempDir()
	servertest.WriteDist(t, distDir, servertest.AgentBinary(t, "v1.0.0"), "v1.0.0", nil)
	in := servertest.Start(t, servertest.Options{HTTPSRoots: pub.Pool, Config: func(c *server.Config) {
		edit(c)
		c.Agent.DistDir = distDir
	}})
	return in, pub, distDir
}

func operatorCert(t *testing.T, pub servertest.PublicCA) (certFile, keyFile string, edit func(*server.Config)) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	copyFile(t, pub.CertFile, certFile)
	copyFile(t, pub.KeyFile, keyFile)
	return certFile, keyFile, func(c *server.Config) { c.Server.TLS.CertFile, c.Server.TLS.KeyFile = certFile, keyFile }
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOperatorHTTPSCertificate (issue 16, item 3): with
// server.tls.cert_file and key_file, HTTPS presents the operator's
// certificate (verified like curl --cacert, with no -k) and re-reads it on
// SIGHUP, while gRPC keeps a certificate from Vigo's CA, which
// registration returns: an agent pinning Vigo's CA registers over the
// publicly trusted HTTPS and checks in over mTLS. A host that trusts
// neither the pinned CA nor the HTTPS certificate sends nothing.
func TestOperatorHTTPSCertificate(t *testing.T) {
	ctx := context.Background()
	pub := servertest.NewPublicCA(t)
	certFile, keyFile, edit := operatorCert(t, pub)
	in := servertest.Start(t, servertest.Options{Config: edit, HTTPSRoots: pub.Pool})
	presented := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", in.APIAddr().String(), &tls.Config{RootCAs: pub.Pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("HTTPS with the public CA's roots: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Issuer.String()
	}
	if got, want := presented(), pub.Leaf.Issuer.String(); got != want {
		t.Fatalf("HTTPS certificate issued by %q, want %q", got, want)
	}
	if _, err := tls.Dial("tcp", in.APIAddr().String(), &tls.Config{RootCAs: in.CAPool(), ServerName: "127.0.0.1"}); err == nil {
		t.Error("HTTPS verifies against Vigo's CA: it should present the operator's certificate")
	}
	if code, body := in.Do(t, "GET", "/bootstrap", nil, false); code != 200 || !strings.Contains(string(body), "\nVIGO_TLS_VERIFY=1\n") {
		t.Errorf("bootstrap script: %d, does not verify its downloads:\n%.400s", code, body)
	}

	dir := filepath.Join(t.TempDir(), "etc")
	p := agent.RegisterParams{Server: in.URL, Hostname: "op1.trusted.test", Dir: dir, CAFingerprint: in.CA().Fingerprint(), RootCAs: pub.Pool}
	enr, err := agent.Register(ctx, p)
	if err != nil {
		t.Fatalf("register over the operator's certificate with Vigo's CA pinned: %v", err)
	}
	if !enr.CA.Equal(in.CA().Certificate()) {
		t.Error("registration saved another CA than Vigo's")
	}
	a, err := agent.New(agent.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.CheckinOnce(ctx); err != nil {
		t.Fatalf("check-in over gRPC (Vigo's CA): %v", err)
	}

	untrusting := p
	untrusting.Dir, untrusting.Hostname, untrusting.RootCAs = filepath.Join(t.TempDir(), "etc"), "op2.trusted.test", nil
	if _, err := agent.Register(ctx, untrusting); err == nil || !strings.Contains(err.Error(), "no CA matching --ca-fingerprint, and this host does not trust it") {
		t.Errorf("register from a host that trusts neither: %v", err)
	}

	// An ACME renewal: new files, then SIGHUP.
	renewed := servertest.NewPublicCA(t)
	copyFile(t, renewed.CertFile, certFile)
	copyFile(t, renewed.KeyFile, keyFile)
	in.Reload()
	conn, err := tls.Dial("tcp", in.APIAddr().String(), &tls.Config{RootCAs: renewed.Pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("HTTPS after the renewal: %v", err)
	}
	conn.Close()
}

// TestOperatorCertificateAtTheCAPathIsRefused: a certificate from another
// issuer where the server keeps the one its CA issues (tls/cert) would
// also be gRPC's and break every check-in: the server refuses to start and
// says what to do, instead of serving it (it used to).
func TestOperatorCertificateAtTheCAPathIsRefused(t *testing.T) {
	data := t.TempDir()
	in := servertest.Start(t, servertest.Options{DataDir: data})
	in.Stop()
	pub := servertest.NewPublicCA(t)
	copyFile(t, pub.CertFile, filepath.Join(data, "tls", "cert"))
	copyFile(t, pub.KeyFile, filepath.Join(data, "tls", "key"))
	cfg := &server.Config{}
	cfg.Server.DataDir = data
	cfg.Server.APIListen, cfg.Server.GRPCListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Defaults()
	_, err := server.New(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "set server.tls.cert_file and key_file") {
		t.Fatalf("start with a foreign certificate at tls/cert: %v", err)
	}
}

// TestE2EBootstrapWithTrustedCertificate (issue 16, item 3): with an
// operator's HTTPS certificate the host trusts (here: a test CA in the
// host's trust store through SSL_CERT_FILE and CURL_CA_BUNDLE), the
// one-liner works without -k, the script verifies its downloads, `vigo
// register` pins Vigo's CA (the script's default --ca-fingerprint) and the
// envoy checks in over gRPC. A host that does not trust the certificate
// is told so, and to pass --insecure.
func TestE2EBootstrapWithTrustedCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent and runs it against a server")
	}
	needTool(t, "curl")
	in, pub, distDir := operatorServerWithAgent(t)
	trusting := []string{"SSL_CERT_FILE=" + pub.CAFile, "CURL_CA_BUNDLE=" + pub.CAFile}
	curl := []string{"-sSf", "--cacert", pub.CAFile} // no -k

	h := newHost(t)
	r := in.BootstrapWith(t, servertest.BootstrapOptions{CurlArgs: curl, Env: trusting}, []string{"sh"},
		"--prefix", h.prefix, "--no-service", "--hostname", "tls1.trusted.test")
	if r.Code != 0 || !strings.Contains(r.Stdout, "this host is enrolled") {
		t.Fatalf("bootstrap with a trusted certificate: %s", r)
	}
	if r := servertest.Exec(t, nil, h.bin, "run", "--once", "--config-dir", h.conf); r.Code != 0 {
		t.Fatalf("run --once: %s", r)
	}

	// After enrollment, HTTPS still presents the operator's certificate:
	// a self-update downloads through it, and a rebootstrap registers
	// through it with the saved CA pinned.
	before, err := agent.ReadFile(h.conf)
	if err != nil {
		t.Fatal(err)
	}
	servertest.WriteDist(t, distDir, servertest.AgentBinary(t, "v1.1.0"), "v1.1.0", nil)
	in.Reload()
	if code, body := in.Do(t, http.MethodPost, "/api/v1/envoys/"+before.UUID+"/update", apiv1.EnvoyUpdateRequest{Version: "v1.1.0"}, true); code != http.StatusOK {
		t.Fatalf("flag update: HTTP %d %s", code, body)
	}
	if r := servertest.Exec(t, trusting, h.bin, "run", "--once", "--config-dir", h.conf); r.Code != 0 || !strings.Contains(r.Stdout, "(agent v1.1.0)") {
		t.Fatalf("run --once with an update over the operator's certificate: %s", r)
	}
	if code, body := in.Do(t, http.MethodPost, "/api/v1/envoys/"+before.UUID+"/rebootstrap", nil, true); code != http.StatusOK {
		t.Fatalf("rebootstrap: HTTP %d %s", code, body)
	}
	if r := servertest.Exec(t, trusting, h.bin, "run", "--once", "--config-dir", h.conf); r.Code != 0 {
		t.Fatalf("run --once with a rebootstrap over the operator's certificate: %s", r)
	}
	if after, err := agent.ReadFile(h.conf); err != nil || after.UUID == before.UUID {
		t.Fatalf("after the rebootstrap: uuid %v (err %v), was %s", after.UUID, err, before.UUID)
	}

	h2 := newHost(t)
	r = in.BootstrapWith(t, servertest.BootstrapOptions{CurlArgs: curl}, []string{"sh"},
		"--prefix", h2.prefix, "--no-service", "--hostname", "tls2.trusted.test")
	if r.Code == 0 || !strings.Contains(r.Stderr, "does not trust the certificate") || !strings.Contains(r.Stderr, "--insecure") {
		t.Errorf("bootstrap from a host that does not trust the certificate: %s", r)
	}
}
