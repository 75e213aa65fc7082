package servertest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/agentdist"
)

// AgentPackage is the import path of the agent command.
const AgentPackage = "github.com/vigo-enroll/vigo/cmd/vigo"

// CommandTimeout bounds every command run by the helpers of this file
// (builds get BuildTimeout).
const CommandTimeout = 2 * time.Minute

// BuildTimeout bounds one build of the agent (a cold build on a loaded
// machine takes a minute or more).
const BuildTimeout = 10 * time.Minute

var agentBuilds struct {
	sync.Mutex
	dir   string
	paths map[string]string // version -> path
}

// AgentBinary builds the agent (cmd/vigo) for the running platform with
// agent.Version set to version, once per test binary and version, and
// returns the path of the build. Callers copy it (CopyFile) and never
// change it. RemoveAgentBinaries deletes the builds.
func AgentBinary(t testing.TB, version string) string {
	t.Helper()
	agentBuilds.Lock()
	defer agentBuilds.Unlock()
	if p, ok := agentBuilds.paths[version]; ok {
		return p
	}
	if agentBuilds.dir == "" {
		dir, err := os.MkdirTemp("", "vigo-agent-builds-")
		if err != nil {
			t.Fatal(err)
		}
		agentBuilds.dir, agentBuilds.paths = dir, map[string]string{}
	}
	out := filepath.Join(agentBuilds.dir, version, DistName(runtime.GOOS, runtime.GOARCH))
	ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
	defer cancel()
	// The flags of .ci/dist.sh: a static build whose build info carries the
	// version (agentdist.BuildManifest reads it from there).
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-s -w -X "+agentdist.VersionVar+"="+version, "-o", out, AgentPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the agent %s: %v\n%s", version, err, b)
	}
	agentBuilds.paths[version] = out
	return out
}

// RemoveAgentBinaries deletes what AgentBinary built; call it from TestMain
// after m.Run.
func RemoveAgentBinaries() {
	agentBuilds.Lock()
	defer agentBuilds.Unlock()
	if agentBuilds.dir != "" {
		os.RemoveAll(agentBuilds.dir)
	}
	agentBuilds.dir, agentBuilds.paths = "", nil
}

// DistName is the file name of a build in a distribution folder.
func DistName(goos, arch string) string {
	name := "vigo-" + goos + "-" + arch
	if goos == "windows" {
		name += ".exe"
	}
	return name
}

// WriteDist makes dir a distribution folder serving binary for the running
// platform as version: it copies the binary in, writes the manifest and,
// when signer is not nil, signs it (agentdist.SignDir), which also puts the
// public key in the manifest. An existing build and manifest are replaced.
// It returns the path of the copied build.
func WriteDist(t testing.TB, dir, binary, version string, signer ed25519.PrivateKey) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, DistName(runtime.GOOS, runtime.GOARCH))
	CopyFile(t, binary, dst)
	m, err := agentdist.BuildManifest(dir, version)
	if err != nil {
		t.Fatal(err)
	}
	if err := agentdist.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	if signer != nil {
		if _, err := agentdist.SignDir(dir, signer); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// CopyFile copies src to dst (mode 0755) through a temporary file and a
// rename, so that a server reading dst never sees half a file.
func CopyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// Result is the outcome of a command.
type Result struct {
	Code           int
	Stdout, Stderr string
}

func (r Result) String() string {
	return fmt.Sprintf("exit status %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// Exec runs a command with CommandTimeout and returns its result; a
// command that cannot start, or outlives the timeout, fails the test. env
// entries are added to the environment, from which VIGO_TOKEN is removed.
func Exec(t testing.TB, env []string, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: no answer within %s\n%s", name, strings.Join(args, " "), CommandTimeout, r)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VIGO_TOKEN=") {
			env = append(env, kv)
		}
	}
	return env
}

// Bootstrap runs the one-liner against the server: `curl -sSfk
// URL/bootstrap | SHELL -s -- args...`, with a real pipe between the two
// processes, each bounded by CommandTimeout. shell is the shell's command
// line, e.g. {"sh"} or {"busybox", "sh"}. A curl failure fails the test.
func (in *Instance) Bootstrap(t testing.TB, shell []string, args ...string) Result {
	t.Helper()
	return in.BootstrapWith(t, BootstrapOptions{CurlArgs: []string{"-sSfk"}}, shell, args...)
}

// BootstrapOptions tune BootstrapWith.
type BootstrapOptions struct {
	// CurlArgs are the one-liner's curl options, e.g. -sSf --cacert F.
	CurlArgs []string
	// Env is added to both commands' environment.
	Env []string
}

// BootstrapWith runs the one-liner with o's curl options and environment.
func (in *Instance) BootstrapWith(t testing.TB, o BootstrapOptions, shell []string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	curl := exec.CommandContext(ctx, "curl", append(append([]string{}, o.CurlArgs...), in.URL+"/bootstrap")...)
	curl.Env = append(cleanEnv(), o.Env...)
	var curlErr bytes.Buffer
	curl.Stderr = &curlErr
	pipe, err := curl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	shArgs := append(append(append([]string{}, shell[1:]...), "-s", "--"), args...)
	sh := exec.CommandContext(ctx, shell[0], shArgs...)
	sh.Env = append(cleanEnv(), o.Env...)
	sh.Stdin = pipe
	var stdout, stderr bytes.Buffer
	sh.Stdout, sh.Stderr = &stdout, &stderr
	if err := curl.Start(); err != nil {
		t.Fatalf("start curl: %v", err)
	}
	if err := sh.Start(); err != nil {
		t.Fatalf("start %s: %v", shell[0], err)
	}
	shErr := sh.Wait()
	if err := curl.Wait(); err != nil {
		t.Fatalf("curl %s/bootstrap: %v\n%s", in.URL, err, curlErr.String())
	}
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("bootstrap with %s: no answer within %s\n%s", strings.Join(shell, " "), CommandTimeout, r)
	case errors.As(shErr, &ee):
		r.Code = ee.ExitCode()
	case shErr != nil:
		t.Fatalf("%s: %v", shell[0], shErr)
	}
	return r
}

// Envoy returns the envoy with this uuid (or hostname) from the admin API.
func (in *Instance) Envoy(t testing.TB, id string) apiv1.Envoy {
	t.Helper()
	code, body := in.Do(t, http.MethodGet, "/api/v1/envoys/"+id, nil, true)
	if code != http.StatusOK {
		t.Fatalf("show envoy %s: HTTP %d %s", id, code, body)
	}
	var e apiv1.Envoy
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("show envoy %s: %v", id, err)
	}
	return e
}

// WaitEnvoy polls the envoy until ok accepts it (check-ins are written in
// batches) and returns it; it fails the test after 20 s.
func (in *Instance) WaitEnvoy(t testing.TB, id string, ok func(apiv1.Envoy) bool) apiv1.Envoy {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		e := in.Envoy(t, id)
		if ok(e) {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("envoy %s did not reach the expected state within 20s: %+v", id, e)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PolicyStatus returns GET /api/v1/policy/status.
func (in *Instance) PolicyStatus(t testing.TB) apiv1.PolicyStatus {
	t.Helper()
	code, body := in.Do(t, http.MethodGet, "/api/v1/policy/status", nil, true)
	if code != http.StatusOK {
		t.Fatalf("policy status: HTTP %d %s", code, body)
	}
	var st apiv1.PolicyStatus
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("policy status: %v", err)
	}
	return st
}

// WritePolicy replaces policy.cue in the policy folder, asks for a reload
// and waits (20 s at most) until the active revision is another than the
// one before; it returns the new active revision.
func (in *Instance) WritePolicy(t testing.TB, policy string) string {
	t.Helper()
	before := ""
	if st := in.PolicyStatus(t); st.Active != nil {
		before = st.Active.Revision
	}
	if err := os.WriteFile(filepath.Join(in.PolicyDir, "policy.cue"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	in.Reload()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := in.PolicyStatus(t)
		if st.Active != nil && st.Active.Revision != before {
			return st.Active.Revision
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(st)
			t.Fatalf("policy revision did not change from %q within 20s: %s", before, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
