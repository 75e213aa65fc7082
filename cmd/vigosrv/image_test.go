//go:build image

package main

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/agentdist"
)

// TestImage runs the container image (make test-image builds it and sets
// VIGO_TEST_IMAGE) on the real Docker engine, as issue 16 describes: a
// container with a named volume; a host enrolled from outside with the
// real one-liner (--prefix, --no-service) that checks in over mTLS; every
// platform's agent download answering with the manifest's SHA-256; a new
// container on the same volume keeping the CA, the admin token, the envoy
// and the last good policy; a container without a volume saying at start
// that its data is ephemeral. Ports are published on 127.0.0.1 only, on
// free ports (the server listens on the same port inside, so that the
// addresses it tells agents are the published ones).
func TestImage(t *testing.T) {
	img := os.Getenv("VIGO_TEST_IMAGE")
	if img == "" {
		t.Skip("VIGO_TEST_IMAGE is not set: run make test-image")
	}
	for _, tool := range []string{"docker", "curl", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	suffix := randomHex(4)
	vol := "vigo-imagetest-" + suffix
	apiPort, grpcPort := freePort(t), freePort(t)
	api := "https://localhost:" + apiPort
	var containers []string
	t.Cleanup(func() {
		for _, c := range containers {
			_, _ = docker(t, "rm", "-f", "-v", c)
		}
		_, _ = docker(t, "volume", "rm", "-f", vol)
	})
	policy := t.TempDir()
	// The server in the container runs as uid 10001: the mounted policy
	// must be readable by others.
	must(t, os.Chmod(policy, 0o755))
	writePolicy := func(text string) {
		t.Helper()
		must(t, os.WriteFile(filepath.Join(policy, "policy.cue"), []byte(text), 0o644))
	}
	writePolicy("package policy\n\napproved: [\"approved.example.com\"]\n")
	run := func(name string, volume bool) {
		t.Helper()
		args := []string{"run", "-d", "--name", name,
			"-p", "127.0.0.1:" + apiPort + ":" + apiPort, "-p", "127.0.0.1:" + grpcPort + ":" + grpcPort,
			"-e", "VIGO_API_LISTEN=:" + apiPort, "-e", "VIGO_GRPC_LISTEN=:" + grpcPort,
			"-e", "VIGO_POLICY_DIR=/etc/vigo/policy", "-v", policy + ":/etc/vigo/policy:ro"}
		if volume {
			args = append(args, "-v", vol+":/srv/vigo")
		}
		containers = append(containers, name)
		if out, err := docker(t, append(args, img)...); err != nil {
			t.Fatalf("docker run: %v\n%s", err, out)
		}
	}
	vigocli := func(c string, args ...string) string {
		t.Helper()
		out, err := docker(t, append([]string{"exec", "-e", "VIGO_SERVER=" + api, c, "vigocli"}, args...)...)
		if err != nil {
			t.Fatalf("vigocli %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	// The image runs as a non-root user.
	if user, _ := docker(t, "image", "inspect", "-f", "{{.Config.User}}", img); strings.TrimSpace(user) != "10001:10001" {
		t.Errorf("image user %q, want 10001:10001", user)
	}
	size, _ := docker(t, "image", "inspect", "-f", "{{.Size}}", img)
	t.Logf("image %s: %s bytes", img, strings.TrimSpace(size))

	c1 := "vigo-imagetest-" + suffix + "-1"
	start := time.Now()
	run(c1, true)
	waitReady(t, c1, api)
	t.Logf("first start to ready: %v", time.Since(start).Round(time.Millisecond))
	waitHealthy(t, c1)

	// A token, and the one-liner from outside the container.
	var tok apiv1.TokenCreated
	must(t, json.Unmarshal([]byte(vigocli(c1, "tokens", "generate", "--pattern", "img1.example.com", "-o", "json")), &tok))
	host := t.TempDir()
	conf := filepath.Join(host, "etc/vigo-envoy")
	bin := filepath.Join(host, "usr/local/bin/vigo")
	out, err := exec.Command("sh", "-c", `curl -sSfk "$1/bootstrap" | sh -s -- --prefix "$2" --no-service --token "$3" --hostname img1.example.com`,
		"sh", api, host, tok.Token).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "this host is a Vigo envoy") {
		t.Fatalf("one-liner: %v\n%s", err, out)
	}
	checkin := func() {
		t.Helper()
		if out, err := exec.Command(bin, "run", "--once", "--config-dir", conf).CombinedOutput(); err != nil {
			t.Fatalf("vigo run --once: %v\n%s", err, out)
		}
	}
	checkin()
	if out := vigocli(c1, "envoys", "list"); !strings.Contains(out, "img1.example.com") {
		t.Fatalf("envoys list does not show the envoy:\n%s", out)
	}

	// Every platform's agent answers with the manifest's SHA-256.
	var m agentdist.Manifest
	must(t, json.Unmarshal(dockerCat(t, c1, "/usr/share/vigo/dist/manifest.json"), &m))
	if len(m.Files) != 13 {
		t.Errorf("the manifest lists %d agent builds, want 13", len(m.Files))
	}
	for _, f := range m.Files {
		sum := download(t, api+"/api/v1/agent/download/"+f.OS+"/"+f.Arch)
		if sum != f.SHA256 {
			t.Errorf("download %s/%s: sha256 %s, manifest %s", f.OS, f.Arch, sum, f.SHA256)
		}
	}

	fingerprint := scriptFingerprint(t, api)
	admin := dockerCat(t, c1, "/srv/vigo/admin.token")
	var st1 apiv1.PolicyStatus
	must(t, json.Unmarshal([]byte(vigocli(c1, "policy", "status", "-o", "json")), &st1))
	if st1.Active == nil {
		t.Fatalf("no active policy: %+v", st1)
	}

	// A new container on the same volume, with a policy that no longer
	// validates: the last good one must come from the volume.
	writePolicy("package policy\n\nnot_a_field: 1\n")
	if out, err := docker(t, "rm", "-f", c1); err != nil {
		t.Fatalf("docker rm: %v\n%s", err, out)
	}
	c2 := "vigo-imagetest-" + suffix + "-2"
	start = time.Now()
	run(c2, true)
	waitReady(t, c2, api)
	t.Logf("restart on the volume to ready: %v", time.Since(start).Round(time.Millisecond))
	if got := scriptFingerprint(t, api); got != fingerprint {
		t.Errorf("CA fingerprint after the restart %s, want %s", got, fingerprint)
	}
	if got := dockerCat(t, c2, "/srv/vigo/admin.token"); !bytes.Equal(got, admin) {
		t.Error("the admin token changed across the restart")
	}
	var st2 apiv1.PolicyStatus
	out2 := vigocliAllowFail(t, c2, api, "policy", "status", "-o", "json")
	must(t, json.Unmarshal([]byte(out2), &st2))
	if st2.Active == nil || st2.Active.Revision != st1.Active.Revision {
		t.Errorf("active policy after the restart %+v, want revision %s", st2.Active, st1.Active.Revision)
	}
	checkin()
	if out := vigocli(c2, "envoys", "list"); !strings.Contains(out, "img1.example.com") {
		t.Fatalf("envoys list after the restart does not show the envoy:\n%s", out)
	}
	// A backup as the README shows it, taken while the server runs.
	archive, err := exec.Command("docker", "exec", c2, "vigosrv", "backup", "--to", "-").Output()
	if err != nil {
		t.Fatalf("docker exec vigosrv backup --to -: %v", err)
	}
	rc := &server.Config{}
	rc.Server.DataDir = filepath.Join(t.TempDir(), "restored")
	rc.Defaults()
	info, err := server.Restore(bytes.NewReader(archive), rc, server.RestoreOptions{})
	if err != nil || len(info.Files) != 6 {
		t.Fatalf("restore the container's backup: %v, %+v", err, info)
	}

	// And as the "done when" says it: docker restart.
	if out, err := docker(t, "restart", c2); err != nil {
		t.Fatalf("docker restart: %v\n%s", err, out)
	}
	waitReady(t, c2, api)
	checkin()

	// Without a volume: the server says so at start.
	c3 := "vigo-imagetest-" + suffix + "-3"
	containers = append(containers, c3)
	if out, err := docker(t, "run", "-d", "--name", c3, img); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		logs, _ := docker(t, "logs", c3)
		if strings.Contains(logs, "anonymous volume") && strings.Contains(logs, "-v vigo:/srv/vigo") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a container without a volume does not warn that its data is ephemeral:\n%s", logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// vigocliAllowFail runs vigocli where a non-zero exit is an answer (policy
// status exits 1 when the last attempt failed).
func vigocliAllowFail(t *testing.T, c, api string, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", append([]string{"exec", "-e", "VIGO_SERVER=" + api, c, "vigocli"}, args...)...)
	out, _ := cmd.Output()
	return string(out)
}

func docker(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	return string(out), err
}

// dockerCat reads a file of a container (the image has no cat).
func dockerCat(t *testing.T, c, path string) []byte {
	t.Helper()
	out, err := exec.Command("docker", "cp", c+":"+path, "-").Output()
	if err != nil {
		t.Fatalf("docker cp %s: %v", path, err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	if _, err := tr.Next(); err != nil {
		t.Fatalf("docker cp %s: %v", path, err)
	}
	b, err := io.ReadAll(tr)
	must(t, err)
	return b
}

var insecure = &http.Client{Timeout: time.Minute, Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the container's self-signed server, like curl -k
}}

func waitReady(t *testing.T, c, api string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := insecure.Get(api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			logs, _ := docker(t, "logs", c)
			t.Fatalf("container %s not ready within 90s (%v):\n%s", c, err, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitHealthy(t *testing.T, c string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _ := docker(t, "inspect", "-f", "{{.State.Health.Status}}", c)
		if strings.TrimSpace(out) == "healthy" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s not healthy within 90s: %s", c, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// download fetches url and returns its SHA-256, waiting out the
// bootstrap routes' rate limit (every request comes from one address).
func download(t *testing.T, url string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := insecure.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		if resp.StatusCode == http.StatusTooManyRequests && time.Now().Before(deadline) {
			resp.Body.Close()
			wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			time.Sleep(time.Duration(max(wait, 1)) * time.Second)
			continue
		}
		if resp.StatusCode != 200 {
			resp.Body.Close()
			t.Fatalf("GET %s: %s", url, resp.Status)
		}
		h := sha256.New()
		_, err = io.Copy(h, resp.Body)
		resp.Body.Close()
		must(t, err)
		return hex.EncodeToString(h.Sum(nil))
	}
}

var fingerprintLine = regexp.MustCompile(`(?m)^VIGO_CA_FINGERPRINT='?([0-9a-f]{64})'?$`)

func scriptFingerprint(t *testing.T, api string) string {
	t.Helper()
	resp, err := insecure.Get(api + "/bootstrap")
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	m := fingerprintLine.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no CA fingerprint in the bootstrap script:\n%s", b)
	}
	return string(m[1])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
