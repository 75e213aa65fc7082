package main

import (
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeSteps returns the shell blocks of the README's "Try it step by
// step", in order.
func readmeSteps(t *testing.T, readme string) []string {
	t.Helper()
	start := strings.Index(readme, "## Try it step by step")
	end := strings.Index(readme, "The bootstrap script takes")
	if start < 0 || end < start {
		t.Fatal("README.md has no \"Try it step by step\" section")
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(readme[start:end], -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// TestReadmeStepByStep (issue 17, item 6): the README's step-by-step runs
// in order on a fresh checkout — `make run` in one terminal, the other
// blocks in another — and writes nothing into the repository.
func TestReadmeStepByStep(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the three binaries and runs make run")
	}
	for _, tool := range []string{"make", "curl", "openssl", "hostname", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README needs %s: %v", tool, err)
		}
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeSteps(t, string(readme))
	if len(blocks) < 2 || strings.TrimSpace(strings.SplitN(blocks[0], "#", 2)[0]) != "make run" {
		t.Fatalf("the step-by-step must start with a block of `make run` alone, then the other terminal's: %q", blocks)
	}
	statusBefore := gitStatus(t, repo)

	// Terminal 1: make run, with bin/ and vigo-data/ in a scratch "checkout
	// view" (the README's paths are relative to the repository root) and
	// free ports instead of 8443 and 1530, which the machine may use.
	work := t.TempDir()
	port := freePort(t)
	mk := exec.Command("make", "-C", repo, "run", "BIN="+filepath.Join(work, "bin"), "DATA="+filepath.Join(work, "vigo-data"))
	mk.Env = append(os.Environ(), "VIGO_API_LISTEN=127.0.0.1:"+port, "VIGO_GRPC_LISTEN=127.0.0.1:0")
	mk.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A file, not a buffer: make's output is copied while the test reads it.
	runLog, err := os.Create(filepath.Join(t.TempDir(), "make-run.log"))
	if err != nil {
		t.Fatal(err)
	}
	mk.Stdout, mk.Stderr = runLog, runLog
	if err := mk.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-mk.Process.Pid, syscall.SIGTERM)
		_ = mk.Wait()
	})
	waitReadyz(t, port, runLog.Name(), 5*time.Minute)

	// Terminal 2: the other blocks, in order, as one shell session.
	script := "set -eu\n" + strings.Join(blocks[1:], "\n")
	script = strings.ReplaceAll(script, ":8443", ":"+port)
	sh := exec.Command("sh", "-c", script)
	sh.Dir = work
	sh.Env = append(os.Environ(), "VIGO_SERVER=https://localhost:"+port)
	out, err := sh.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(runLog.Name())
		t.Fatalf("the README's step-by-step failed: %v\n%s\n--- make run:\n%s", err, out, log)
	}
	host, _ := os.Hostname()
	for _, want := range []string{strings.ToLower(host), "web2.example.com", "web3.example.com"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("envoys list does not show %s:\n%s", want, out)
		}
	}
	if after := gitStatus(t, repo); after != statusBefore {
		t.Errorf("the step-by-step changed the checkout:\nbefore:\n%s\nafter:\n%s", statusBefore, after)
	}
	ents, _ := os.ReadDir(work)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "bin vigo-data" {
		t.Errorf("the step-by-step left files beside bin and vigo-data: %v", names)
	}
}

func gitStatus(t *testing.T, repo string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", repo, "status", "--porcelain", "--ignored").CombinedOutput()
	if err != nil {
		t.Fatalf("git status: %v\n%s", err, out)
	}
	return string(out)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func waitReadyz(t *testing.T, port string, logFile string, within time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		resp, err := c.Get("https://127.0.0.1:" + port + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	log, _ := os.ReadFile(logFile)
	t.Fatalf("make run: no ready server on port %s within %s:\n%s", port, within, log)
}

// TestReadmeLinksEveryDoc (issue 17, item 6): every page under docs/ is
// linked from the README, and every relative link of the README and the
// docs names a file of the repository.
func TestReadmeLinksEveryDoc(t *testing.T) {
	repo := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := filepath.Glob(filepath.Join(repo, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md (%v)", err)
	}
	for _, d := range docs {
		if !strings.Contains(string(readme), "](docs/"+filepath.Base(d)+")") {
			t.Errorf("README.md does not link docs/%s", filepath.Base(d))
		}
	}
	link := regexp.MustCompile(`\]\(([^)\s#]+)(#[^)\s]*)?\)`)
	for _, f := range append(docs, filepath.Join(repo, "README.md")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(f), target)); err != nil {
				t.Errorf("%s links %s, which does not exist", filepath.Base(f), target)
			}
		}
	}
}
