package server_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// fakeSudo stands in for sudo(8), which is not installed on the test
// machines (and the tests run as root): it records its arguments and,
// from /proc, the command lines (what ps shows) that hold $FAKE_SUDO_NEEDLE
// (the test's token; nothing else is recorded), then runs the command the
// way sudo's default env_reset does: a minimal environment plus the
// variables named by --preserve-env=LIST.
const fakeSudo = `#!/bin/sh
printf '%s\n' "$*" >>"$FAKE_SUDO_LOG"
if [ -d /proc/self ]; then
	echo "snapshot" >>"$FAKE_SUDO_PS"
	for f in /proc/[0-9]*/cmdline; do
		tr '\000' ' ' 2>/dev/null <"$f" | grep -F -e "$FAKE_SUDO_NEEDLE"
	done >>"$FAKE_SUDO_PS"
fi
keep=
while [ "$#" -gt 0 ]; do
	case $1 in
	--preserve-env=*) keep=${1#--preserve-env=}; shift ;;
	-*) shift ;;
	*) break ;;
	esac
done
vars=
# FAKE_SUDO_SYSTEM_ENV names variables that stand for the host's own
# configuration (its trust store), which sudo does not need to pass.
for v in $(echo "$keep,$FAKE_SUDO_SYSTEM_ENV" | tr ',' ' '); do
	vars="$vars $v=$(printenv "$v")"
done
# shellcheck disable=SC2086 # the values are tokens: no spaces
exec env -i PATH="$PATH" HOME="$HOME" $vars "$@"
`

// TestIssue12Item11OneLiner runs the one-liner that `vigocli tokens
// generate` prints, as printed, through the real sh, curl, bootstrap
// script and agent against a real server (security review L12):
//   - the token reaches the agent through VIGO_TOKEN, never through any
//     process's arguments (export is a shell builtin; sudo passes it with
//     --preserve-env; the script hands it to vigo in the environment);
//   - the server's CA is its own, so the line carries --ca-fingerprint
//     (vigo register pins it) and curl --pinnedpubkey, which makes curl
//     check the server's key although -k skips the chain check: a script
//     fetched from anyone else is refused, so the fingerprint given on
//     the operator's command line cannot be swapped with the script.
func TestIssue12Item11OneLiner(t *testing.T) {
	needTool(t, "curl")
	e := newE2E(t, nil, nil)
	const hostname = "oneliner.example.com" // no policy rule: only the token admits it
	tok := e.Token(t, hostname, "1h")
	cmd := tok.Command

	fp := e.CA().Fingerprint()
	for _, want := range []string{
		"export VIGO_TOKEN=" + tok.Token + "; ",
		"curl -sSfk --pinnedpubkey 'sha256//",
		"| sudo --preserve-env=VIGO_TOKEN sh -s -- --ca-fingerprint " + fp,
	} {
		if !strings.Contains(cmd, want) {
			t.Errorf("one-liner lacks %q:\n%s", want, cmd)
		}
	}
	if n := strings.Count(cmd, tok.Token); n != 1 {
		t.Errorf("the token appears %d times in the one-liner, want once (in export):\n%s", n, cmd)
	}

	h := newHost(t)
	r, sudoArgs, ps := runOneLiner(t, cmd, h, hostname, tok.Token, nil)
	if r.Code != 0 || !strings.Contains(r.Stdout, "==> done") {
		t.Fatalf("the printed one-liner failed: %s", r)
	}
	if sudoArgs == "" || strings.Contains(sudoArgs, tok.Token) {
		t.Errorf("sudo's arguments (what ps shows) %q hold the token", sudoArgs)
	}
	if runtime.GOOS == "linux" && ps != "snapshot\n" {
		t.Errorf("process command lines that held the token while sudo ran (want none):\n%s", ps)
	}
	f := h.file(t)
	if f.Hostname != hostname {
		t.Fatalf("enrolled %q", f.Hostname)
	}
	if got := e.Envoy(t, f.UUID); got.Method != "token" || got.TokenID != tok.ID {
		t.Errorf("envoy enrolled by %s (token %q), want by token %s", got.Method, got.TokenID, tok.ID)
	}
	code, body := e.Do(t, http.MethodGet, "/api/v1/tokens", nil, true)
	if ts := decode[[]apiv1.Token](t, body); code != 200 || len(ts) != 1 || ts[0].State != "used" {
		t.Errorf("token after the one-liner: HTTP %d %s", code, body)
	}

	// A server that presents another key (here: the line pins another
	// one) is refused by curl before the script runs: nothing installed.
	other := regexp.MustCompile(`sha256//[A-Za-z0-9+/=]+`).ReplaceAllString(cmd, "sha256//"+strings.Repeat("A", 43)+"=")
	h2 := newHost(t)
	r, _, _ = runOneLiner(t, other, h2, hostname, tok.Token, nil)
	if !strings.Contains(r.Stderr, "public key does not match pinned public key") {
		t.Errorf("curl did not refuse a server with another key:\n%s", r)
	}
	assertNotInstalled(t, h2)
}

// TestIssue12Item11OneLinerOperatorCertificate: with an operator's HTTPS
// certificate the printed line lets curl verify it (no -k, no key pin)
// and still pins Vigo's CA for registration; run as printed, it enrolls
// the host by its token.
func TestIssue12Item11OneLinerOperatorCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent and runs it against a server")
	}
	needTool(t, "curl")
	in, pub, _ := operatorServerWithAgent(t)
	const hostname = "oneliner2.example.com"
	tok := in.Token(t, hostname, "1h")
	want := "export VIGO_TOKEN=" + tok.Token + "; curl -sSf " + in.URL + "/bootstrap | sudo --preserve-env=VIGO_TOKEN sh -s -- --ca-fingerprint " + in.CA().Fingerprint()
	if tok.Command != want {
		t.Fatalf("one-liner:\n%s\nwant\n%s", tok.Command, want)
	}
	// The host trusts the operator's CA (its trust store: here the
	// environment of curl and the agent).
	trusting := []string{"SSL_CERT_FILE=" + pub.CAFile, "CURL_CA_BUNDLE=" + pub.CAFile}
	h := newHost(t)
	r, _, ps := runOneLiner(t, tok.Command, h, hostname, tok.Token, trusting)
	if r.Code != 0 || !strings.Contains(r.Stdout, "==> done") {
		t.Fatalf("the printed one-liner failed: %s", r)
	}
	if runtime.GOOS == "linux" && ps != "snapshot\n" {
		t.Errorf("process command lines that held the token while sudo ran (want none):\n%s", ps)
	}
	if got := in.Envoy(t, h.file(t).UUID); got.Method != "token" || got.TokenID != tok.ID {
		t.Errorf("envoy enrolled by %s (token %q), want by token %s", got.Method, got.TokenID, tok.ID)
	}
}

// runOneLiner runs line as an operator pastes it into a shell on the host
// (with --prefix, --no-service and --hostname appended), with fakeSudo
// first in PATH; env is added (a host's trust store, say) and passed
// through sudo. It returns the result, sudo's arguments and the command
// lines that held token while sudo ran.
func runOneLiner(t *testing.T, line string, h host, hostname, token string, env []string) (servertest.Result, string, string) {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "sudo"), []byte(fakeSudo), 0o755); err != nil {
		t.Fatal(err)
	}
	sudoLog, psLog := filepath.Join(t.TempDir(), "sudo"), filepath.Join(t.TempDir(), "ps")
	// The operator's shell reads the line from its input, as an
	// interactive shell does, so that it is in no process's arguments.
	ctx, cancel := context.WithTimeout(context.Background(), servertest.CommandTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, "sh", "-s")
	c.Stdin = strings.NewReader(line + " --prefix " + h.prefix + " --no-service --hostname " + hostname + "\n")
	c.Env = append([]string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"FAKE_SUDO_LOG=" + sudoLog, "FAKE_SUDO_PS=" + psLog, "FAKE_SUDO_NEEDLE=" + token}, env...)
	var names []string
	for _, kv := range env {
		names = append(names, strings.SplitN(kv, "=", 2)[0])
	}
	c.Env = append(c.Env, "FAKE_SUDO_SYSTEM_ENV="+strings.Join(names, ","))
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	r := servertest.Result{Stdout: stdout.String(), Stderr: stderr.String()}
	if ctx.Err() != nil {
		t.Fatalf("the one-liner did not finish within %s\n%s", servertest.CommandTimeout, r)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	}
	sudoArgs, _ := os.ReadFile(sudoLog)
	ps, _ := os.ReadFile(psLog)
	return r, string(sudoArgs), string(ps)
}
