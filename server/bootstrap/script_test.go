package bootstrap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vigo-enroll/vigo/server/agentdist"
)

// shells returns the POSIX shells to run the script under: dash and
// busybox sh, each when installed.
func shells(t *testing.T) [][]string {
	t.Helper()
	var out [][]string
	if p, err := exec.LookPath("dash"); err == nil {
		out = append(out, []string{p})
	}
	if p, err := exec.LookPath("busybox"); err == nil {
		out = append(out, []string{p, "sh"})
	}
	if len(out) == 0 {
		t.Skip("neither dash nor busybox is installed")
	}
	return out
}

func shellName(sh []string) string { return filepath.Base(sh[0]) }

// stubs writes fake uname, isainfo, sysctl and service tools into a folder
// to put first in PATH. The fake platform comes from FAKE_* variables; the
// service tools only log, so the tests never touch the host's services.
func stubs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"uname": `#!/bin/sh
case $1 in
-s) echo "${FAKE_S:-Linux}" ;;
-m) echo "${FAKE_M:-x86_64}" ;;
-o) echo "${FAKE_O:-GNU/Linux}" ;;
-p) echo "${FAKE_P:-unknown}" ;;
-r) echo "${FAKE_R:-6.1.0}" ;;
esac
`,
		"isainfo": "#!/bin/sh\necho \"${FAKE_ISAINFO:-amd64}\"\n",
		"sysctl":  "#!/bin/sh\necho \"${FAKE_ARM64:-0}\"\n",
	}
	for _, tool := range []string{"systemctl", "launchctl", "service", "rcctl", "svcadm"} {
		files[tool] = "#!/bin/sh\necho \"" + tool + " $*\" >>\"${FAKE_LOG:-/dev/null}\"\n"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type run struct {
	code           int
	stdout, stderr string
}

// runScript runs the script like the one-liner does: sh -s -- args, the
// script on standard input.
func runScript(t *testing.T, sh []string, script []byte, env []string, args ...string) run {
	t.Helper()
	cmd := exec.Command(sh[0], append(append(sh[1:], "-s", "--"), args...)...)
	cmd.Stdin = bytes.NewReader(script)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	code := 0
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return run{code, stdout.String(), stderr.String()}
}

func TestScriptDetectsPlatform(t *testing.T) {
	t.Parallel()
	script, err := Render(goldenParams)
	if err != nil {
		t.Fatal(err)
	}
	stub := stubs(t)
	tests := []struct {
		name    string
		env     []string
		want    string // "os/arch" on success
		wantErr string // part of the error otherwise
	}{
		{name: "linux amd64", env: []string{"FAKE_S=Linux", "FAKE_M=x86_64"}, want: "linux/amd64"},
		{name: "linux arm64", env: []string{"FAKE_S=Linux", "FAKE_M=aarch64"}, want: "linux/arm64"},
		{name: "linux armv7", env: []string{"FAKE_S=Linux", "FAKE_M=armv7l"}, want: "linux/arm"},
		{name: "linux armv6", env: []string{"FAKE_S=Linux", "FAKE_M=armv6l"}, want: "linux/arm"},
		{name: "linux i686", env: []string{"FAKE_S=Linux", "FAKE_M=i686"}, want: "linux/386"},
		{name: "macOS intel", env: []string{"FAKE_S=Darwin", "FAKE_M=x86_64"}, want: "darwin/amd64"},
		{name: "macOS arm", env: []string{"FAKE_S=Darwin", "FAKE_M=arm64"}, want: "darwin/arm64"},
		{name: "macOS rosetta shell", env: []string{"FAKE_S=Darwin", "FAKE_M=x86_64", "FAKE_ARM64=1"}, want: "darwin/arm64"},
		{name: "freebsd amd64", env: []string{"FAKE_S=FreeBSD", "FAKE_M=amd64"}, want: "freebsd/amd64"},
		{name: "freebsd arm64", env: []string{"FAKE_S=FreeBSD", "FAKE_M=arm64"}, want: "freebsd/arm64"},
		{name: "openbsd", env: []string{"FAKE_S=OpenBSD", "FAKE_M=amd64"}, want: "openbsd/amd64"},
		{name: "netbsd", env: []string{"FAKE_S=NetBSD", "FAKE_M=amd64"}, want: "netbsd/amd64"},
		{name: "netbsd board", env: []string{"FAKE_S=NetBSD", "FAKE_M=evbarm", "FAKE_P=aarch64"}, want: "netbsd/arm64"},
		{name: "illumos", env: []string{"FAKE_S=SunOS", "FAKE_M=i86pc", "FAKE_O=illumos"}, want: "illumos/amd64"},
		{name: "solaris", env: []string{"FAKE_S=SunOS", "FAKE_M=i86pc", "FAKE_O=Solaris", "FAKE_R=5.11"}, wantErr: "step 1/6 (detect platform): unsupported operating system: SunOS 5.11 (illumos is supported, Oracle Solaris is not)"},
		{name: "aix", env: []string{"FAKE_S=AIX"}, wantErr: "step 1/6 (detect platform): unsupported operating system: AIX (supported: Linux, macOS, FreeBSD, OpenBSD, NetBSD, illumos; Windows through /bootstrap?os=windows)"},
		{name: "msys", env: []string{"FAKE_S=MINGW64_NT-10.0"}, wantErr: "on Windows run the PowerShell bootstrap: https://vigo.example.com:8443/bootstrap?os=windows"},
		{name: "riscv", env: []string{"FAKE_S=Linux", "FAKE_M=riscv64"}, wantErr: "step 1/6 (detect platform): unsupported architecture: riscv64 on Linux"},
		{name: "armv5", env: []string{"FAKE_S=Linux", "FAKE_M=armv5tel"}, wantErr: "unsupported architecture: armv5tel"},
	}
	for _, sh := range shells(t) {
		for _, tt := range tests {
			t.Run(shellName(sh)+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				env := append([]string{"PATH=" + stub + string(os.PathListSeparator) + os.Getenv("PATH")}, tt.env...)
				r := runScript(t, sh, script, env, "--dry-run")
				if tt.wantErr != "" {
					if r.code == 0 || !strings.Contains(r.stderr, tt.wantErr) {
						t.Errorf("exit %d, stderr %q; want an error with %q", r.code, r.stderr, tt.wantErr)
					}
					return
				}
				if r.code != 0 || !strings.Contains(r.stdout, "  platform:       "+tt.want+"\n") {
					t.Errorf("exit %d, stdout:\n%s\nstderr: %s\nwant platform %s", r.code, r.stdout, r.stderr, tt.want)
				}
			})
		}
	}
}

func TestScriptArguments(t *testing.T) {
	t.Parallel()
	script, err := Render(goldenParams)
	if err != nil {
		t.Fatal(err)
	}
	stub := stubs(t)
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr string
	}{
		{name: "defaults", args: nil, wantStdout: []string{
			"  server:         https://vigo.example.com:8443\n",
			"  binary:         /usr/local/bin/vigo\n",
			"  configuration:  /etc/vigo-envoy\n",
			"  service:        vigo-envoy\n",
			"  hostname:       (from the system)\n",
			"  token:          none\n",
			"  ca fingerprint: 3f1c9a0e5b7d24c6a8e0f2b4d6c8a0e2f4b6d8c0a2e4f6b8d0c2a4e6f8b0d2c4\n",
		}},
		{name: "all options", args: []string{"--token", "vt_abc.def", "--hostname", "web1.example.com", "--force", "--ca-fingerprint", "AA:BB",
			"--server", "https://other.example.com:9443/", "--prefix", "/tmp/img/", "--no-service"}, wantStdout: []string{
			"  server:         https://other.example.com:9443\n",
			"  binary:         /tmp/img/usr/local/bin/vigo\n",
			"  configuration:  /tmp/img/etc/vigo-envoy\n",
			"  service:        none (--no-service)\n",
			"  hostname:       web1.example.com\n",
			"  token:          given\n",
			"  ca fingerprint: AA:BB\n",
		}},
		{name: "equals forms", args: []string{"--token=vt_x.y", "--hostname=h1", "--prefix=/opt/x"}, wantStdout: []string{
			"  binary:         /opt/x/usr/local/bin/vigo\n", "  hostname:       h1\n", "  token:          given\n"}},
		{name: "token never printed", args: []string{"--token", "vt_secretid.secretpart"}, wantStdout: []string{"  token:          given\n"}},
		{name: "help", args: []string{"--help"}, wantStdout: []string{"--no-service         install and enroll, but install and start no service\n"}},
		{name: "unknown", args: []string{"--tokn", "x"}, wantCode: 1, wantStderr: "vigo-bootstrap: error: unknown argument: --tokn (see --help)\n"},
		{name: "missing value", args: []string{"--token"}, wantCode: 1, wantStderr: "vigo-bootstrap: error: --token needs a value\n"},
		{name: "flag as value", args: []string{"--hostname", "--force"}, wantCode: 1, wantStderr: "vigo-bootstrap: error: --hostname needs a value, got --force\n"},
		{name: "bad hostname", args: []string{"--hostname", "a;reboot"}, wantCode: 1, wantStderr: "vigo-bootstrap: error: --hostname a;reboot is not a valid hostname\n"},
		{name: "bad token", args: []string{"--token", "vt_$(id)"}, wantCode: 1, wantStderr: "vigo-bootstrap: error: --token holds characters a token never has\n"},
		{name: "bad server", args: []string{"--server", "ftp://x"}, wantCode: 1, wantStderr: "vigo-bootstrap: error: --server must be an https:// URL, got ftp://x\n"},
		{name: "server with path", args: []string{"--server", "https://x/evil?a=b"}, wantCode: 1, wantStderr: "vigo-bootstrap: error: --server must be scheme://host[:port], got https://x/evil?a=b\n"},
		{name: "relative prefix", args: []string{"--prefix", "img"}, wantCode: 1, wantStderr: "vigo-bootstrap: error: --prefix must be an absolute path, got img\n"},
		{name: "bad fingerprint", args: []string{"--ca-fingerprint", "zz"}, wantCode: 1, wantStderr: "vigo-bootstrap: error: --ca-fingerprint must be the hex SHA-256 of the CA certificate\n"},
	}
	for _, sh := range shells(t) {
		for _, tt := range tests {
			t.Run(shellName(sh)+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				env := []string{"PATH=" + stub + string(os.PathListSeparator) + os.Getenv("PATH")}
				r := runScript(t, sh, script, env, append([]string{"--dry-run"}, tt.args...)...)
				if r.code != tt.wantCode {
					t.Errorf("exit %d, want %d; stderr %q", r.code, tt.wantCode, r.stderr)
				}
				for _, w := range tt.wantStdout {
					if !strings.Contains(r.stdout, w) {
						t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
					}
				}
				if strings.Contains(r.stdout+r.stderr, "secretpart") {
					t.Errorf("the token was printed")
				}
				if tt.wantStderr != "" || r.stderr != "" {
					if diff := cmp.Diff(tt.wantStderr, r.stderr); diff != "" {
						t.Errorf("stderr (-want +got):\n%s", diff)
					}
				}
			})
		}
	}
}

// fakeAgent is the "vigo" binary the test server distributes: a sh script
// that logs its arguments and does what register and service would.
const fakeAgent = `#!/bin/sh
echo "vigo $*${VIGO_TOKEN:+ (VIGO_TOKEN=$VIGO_TOKEN)}" >>"$FAKE_LOG"
case $1 in
register)
	shift
	while [ "$#" -gt 0 ]; do
		case $1 in
		--config-dir) dir=$2; shift 2 ;;
		*) shift ;;
		esac
	done
	if [ "${VIGO_TOKEN:-}" = vt_bad.secret ]; then
		echo "vigo register: registration refused: token is used, revoked or expired" >&2
		exit 1
	fi
	echo 'uuid: 0b6f3c1e-1111-4222-8333-944455556666' >"$dir/config"
	;;
service)
	[ "$2" != start ] || [ -z "$FAKE_SERVICE_FAILS" ] || { echo "cannot start" >&2; exit 1; }
	;;
esac
`

type e2e struct {
	srv    *httptest.Server
	script []byte
	stub   string
}

// newE2E serves the distribution and the rendered script over real TLS on
// 127.0.0.1; tamper makes the download serve other bytes than announced.
func newE2E(t *testing.T, tamper bool) *e2e {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vigo-linux-amd64"), []byte(fakeAgent), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := agentdist.BuildManifest(dir, "v0.9.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := agentdist.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	d, err := agentdist.New(agentdist.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{stub: stubs(t)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/agent/latest", d.HandleLatest)
	download := d.HandleDownload
	if tamper {
		download = func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(strings.Replace(fakeAgent, "exit 1", "exit 0", 1)))
		}
	}
	mux.HandleFunc("GET /api/v1/agent/download/{os}/{arch}", download)
	mux.HandleFunc("GET /bootstrap", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ContentType(r.URL.Query().Get("os")))
		w.Write(e.script)
	})
	// Render before serving: the handler reads e.script, and requests come
	// from curl, another process, which the race detector cannot see.
	e.srv = httptest.NewUnstartedServer(mux)
	t.Cleanup(e.srv.Close)
	e.script, err = Render(Params{ServerURL: "https://" + e.srv.Listener.Addr().String(), GRPCAddress: "127.0.0.1:1530", CAFingerprint: "ab" + strings.Repeat("0", 62)})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.StartTLS()
	return e
}

// fetchScript gets the script like the one-liner does (curl -sSfk).
func (e *e2e) fetchScript(t *testing.T) []byte {
	t.Helper()
	out, err := exec.Command("curl", "-sSfk", e.srv.URL+"/bootstrap").Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	return out
}

func (e *e2e) env(logFile string, extra ...string) []string {
	return append([]string{"PATH=" + e.stub + string(os.PathListSeparator) + os.Getenv("PATH"), "FAKE_LOG=" + logFile}, extra...)
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// assertNothingInstalled checks that a failed run left no binary, no
// configuration and no work folder.
func assertNothingInstalled(t *testing.T, prefix string) {
	t.Helper()
	for _, p := range []string{"usr/local/bin/vigo", "etc/vigo-envoy"} {
		if _, err := os.Stat(filepath.Join(prefix, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(prefix, "usr/local/bin"))
	for _, e := range entries {
		t.Errorf("left behind in usr/local/bin: %s", e.Name())
	}
}

func TestScriptEndToEnd(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	e := newE2E(t, false)
	script := e.fetchScript(t)
	if !bytes.Equal(script, e.script) {
		t.Fatal("served script differs from the rendered one")
	}
	sum := sha256.Sum256([]byte(fakeAgent))
	digest := hex.EncodeToString(sum[:])

	for _, sh := range shells(t) {
		t.Run(shellName(sh), func(t *testing.T) {
			t.Parallel()
			t.Run("enroll without service", func(t *testing.T) {
				prefix := t.TempDir()
				logFile := filepath.Join(t.TempDir(), "log")
				// A previous enrollment is replaced.
				os.MkdirAll(filepath.Join(prefix, "etc/vigo-envoy"), 0o700)
				os.WriteFile(filepath.Join(prefix, "etc/vigo-envoy/stale-key"), []byte("old"), 0o600)

				r := runScript(t, sh, script, e.env(logFile), "--token", "vt_good.secret", "--hostname", "web1.example.com", "--prefix", prefix, "--no-service")
				if r.code != 0 {
					t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
				}
				wantCalls := []string{"vigo register --config-dir " + prefix + "/etc/vigo-envoy --server " + e.srv.URL +
					" --force --hostname web1.example.com --ca-fingerprint ab" + strings.Repeat("0", 62) + " (VIGO_TOKEN=vt_good.secret)"}
				if diff := cmp.Diff(wantCalls, readLines(t, logFile)); diff != "" {
					t.Errorf("agent calls (-want +got):\n%s", diff)
				}
				for _, step := range []string{"==> [1/6] detect platform\n    linux/amd64\n", "==> [2/6] ", "==> [3/6] download the agent for linux/amd64\n",
					"==> [4/6] verify the agent's SHA-256\n    vigo v0.9.0, sha256 " + digest + "\n", "==> [5/6] register with " + e.srv.URL + "\n",
					"==> [6/6] install and start the service\n    skipped (--no-service)\n", "==> done: "} {
					if !strings.Contains(r.stdout, step) {
						t.Errorf("stdout lacks %q:\n%s", step, r.stdout)
					}
				}
				bin := filepath.Join(prefix, "usr/local/bin/vigo")
				if got, _ := os.ReadFile(bin); string(got) != fakeAgent {
					t.Errorf("installed binary differs")
				}
				if fi, err := os.Stat(bin); err != nil || fi.Mode().Perm() != 0o755 {
					t.Errorf("binary mode: %v %v", fi, err)
				}
				if fi, err := os.Stat(filepath.Join(prefix, "etc/vigo-envoy")); err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("config dir mode: %v %v", fi, err)
				}
				if _, err := os.Stat(filepath.Join(prefix, "etc/vigo-envoy/config")); err != nil {
					t.Errorf("config not written: %v", err)
				}
				if _, err := os.Stat(filepath.Join(prefix, "etc/vigo-envoy/stale-key")); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("previous enrollment data kept: %v", err)
				}
				entries, _ := os.ReadDir(filepath.Join(prefix, "usr/local/bin"))
				if len(entries) != 1 {
					t.Errorf("usr/local/bin holds %d entries, want only vigo", len(entries))
				}
			})

			t.Run("enroll with service", func(t *testing.T) {
				prefix := t.TempDir()
				logFile := filepath.Join(t.TempDir(), "log")
				// An installed agent is asked to uninstall its service first.
				os.MkdirAll(filepath.Join(prefix, "usr/local/bin"), 0o755)
				os.WriteFile(filepath.Join(prefix, "usr/local/bin/vigo"), []byte(fakeAgent), 0o755)
				r := runScript(t, sh, script, e.env(logFile), "--prefix", prefix)
				if r.code != 0 {
					t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
				}
				bin, cfg := prefix+"/usr/local/bin/vigo", prefix+"/etc/vigo-envoy"
				want := []string{
					"vigo service uninstall --binary " + bin + " --config-dir " + cfg,
					"systemctl disable --now vigo-envoy.service",
					"vigo register --config-dir " + cfg + " --server " + e.srv.URL + " --force --ca-fingerprint ab" + strings.Repeat("0", 62),
					"vigo service install --binary " + bin + " --config-dir " + cfg,
					"vigo service start --binary " + bin + " --config-dir " + cfg,
				}
				if diff := cmp.Diff(want, readLines(t, logFile)); diff != "" {
					t.Errorf("calls (-want +got):\n%s", diff)
				}
			})

			t.Run("service start fails: rolled back", func(t *testing.T) {
				prefix := t.TempDir()
				logFile := filepath.Join(t.TempDir(), "log")
				r := runScript(t, sh, script, e.env(logFile, "FAKE_SERVICE_FAILS=1"), "--prefix", prefix)
				if r.code == 0 || !strings.Contains(r.stderr, "vigo-bootstrap: error: step 6/6 (install and start the service): vigo service start failed\n") {
					t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
				}
				if lines := readLines(t, logFile); len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "vigo service uninstall ") {
					t.Errorf("service not uninstalled on rollback; calls: %q", lines)
				}
				assertNothingInstalled(t, prefix)
			})

			t.Run("registration refused: rolled back", func(t *testing.T) {
				prefix := t.TempDir()
				logFile := filepath.Join(t.TempDir(), "log")
				r := runScript(t, sh, script, e.env(logFile), "--token", "vt_bad.secret", "--prefix", prefix, "--no-service")
				if r.code == 0 {
					t.Fatal("exit 0 after a refused registration")
				}
				for _, w := range []string{"vigo register: registration refused: token is used, revoked or expired\n",
					"vigo-bootstrap: error: step 5/6 (register with " + e.srv.URL + "): vigo register failed (its message is above)\n",
					"vigo-bootstrap: rolled back: removed " + prefix + "/usr/local/bin/vigo and " + prefix + "/etc/vigo-envoy; this host is not enrolled\n"} {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
					}
				}
				assertNothingInstalled(t, prefix)
			})

			t.Run("no build for the platform", func(t *testing.T) {
				prefix := t.TempDir()
				logFile := filepath.Join(t.TempDir(), "log")
				r := runScript(t, sh, script, e.env(logFile, "FAKE_M=i686"), "--prefix", prefix, "--no-service")
				want := "vigo-bootstrap: error: step 3/6 (download the agent for linux/386): HTTP 404 from " + e.srv.URL +
					"/api/v1/agent/download/linux/386: no agent build for linux/386; available: linux/amd64\n"
				if r.code == 0 || !strings.Contains(r.stderr, want) {
					t.Errorf("exit %d, stderr:\n%s\nwant %q", r.code, r.stderr, want)
				}
				assertNothingInstalled(t, prefix)
			})

			t.Run("server unreachable", func(t *testing.T) {
				prefix := t.TempDir()
				r := runScript(t, sh, script, e.env(filepath.Join(t.TempDir(), "log")), "--server", "https://127.0.0.1:1", "--prefix", prefix, "--no-service")
				if r.code == 0 || !strings.Contains(r.stderr, "step 3/6 (download the agent for linux/amd64): cannot reach https://127.0.0.1:1/api/v1/agent/download/linux/amd64") {
					t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
				}
				assertNothingInstalled(t, prefix)
			})
		})
	}
}

func TestScriptRefusesTamperedDownload(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	e := newE2E(t, true)
	sum := sha256.Sum256([]byte(fakeAgent))
	for _, sh := range shells(t) {
		t.Run(shellName(sh), func(t *testing.T) {
			t.Parallel()
			prefix := t.TempDir()
			logFile := filepath.Join(t.TempDir(), "log")
			r := runScript(t, sh, e.script, e.env(logFile), "--prefix", prefix, "--no-service")
			if r.code == 0 {
				t.Fatal("exit 0 with a tampered download")
			}
			for _, w := range []string{"vigo-bootstrap: error: step 4/6 (verify the agent's SHA-256): SHA-256 mismatch: downloaded ",
				", server announced " + hex.EncodeToString(sum[:]) + "; the download was removed\n"} {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if lines := readLines(t, logFile); len(lines) != 0 {
				t.Errorf("the tampered binary ran: %q", lines)
			}
			assertNothingInstalled(t, prefix)
		})
	}
}

// TestScriptTakesTokenFromEnvironment: the one-liner hands the token over
// in VIGO_TOKEN (out of every process's arguments); the script passes it
// to vigo register in the environment only, and checks it like --token.
func TestScriptTakesTokenFromEnvironment(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	e := newE2E(t, false)
	script := e.fetchScript(t)
	for _, sh := range shells(t) {
		t.Run(shellName(sh), func(t *testing.T) {
			t.Parallel()
			r := runScript(t, sh, script, e.env("", "VIGO_TOKEN=vt_env.secretpart"), "--dry-run")
			if r.code != 0 || !strings.Contains(r.stdout, "  token:          given\n") || strings.Contains(r.stdout+r.stderr, "secretpart") {
				t.Errorf("dry run with VIGO_TOKEN: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			r = runScript(t, sh, script, e.env("", "VIGO_TOKEN=vt_$(id)"), "--dry-run")
			if r.code != 1 || r.stderr != "vigo-bootstrap: error: --token holds characters a token never has\n" {
				t.Errorf("bad VIGO_TOKEN: exit %d, stderr %q", r.code, r.stderr)
			}

			prefix, logFile := t.TempDir(), filepath.Join(t.TempDir(), "log")
			r = runScript(t, sh, script, e.env(logFile, "VIGO_TOKEN=vt_env.secret"), "--hostname", "web2.example.com", "--prefix", prefix, "--no-service")
			if r.code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			want := []string{"vigo register --config-dir " + prefix + "/etc/vigo-envoy --server " + e.srv.URL +
				" --force --hostname web2.example.com --ca-fingerprint ab" + strings.Repeat("0", 62) + " (VIGO_TOKEN=vt_env.secret)"}
			if diff := cmp.Diff(want, readLines(t, logFile)); diff != "" {
				t.Errorf("agent calls (-want +got):\n%s", diff)
			}
		})
	}
}
