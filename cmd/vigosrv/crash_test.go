package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// proc is a vigosrv process started from the built binary.
type proc struct {
	cmd    *exec.Cmd
	url    string
	client *http.Client
	admin  string
}

var listenLine = regexp.MustCompile(`HTTPS on (\S+), gRPC on (\S+)`)

func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vigosrv")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startProc(t *testing.T, bin, config string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", config)
	// A writer, not StderrPipe: os/exec forbids reading a pipe while Wait
	// (here in Cleanup) may close it.
	addr := make(chan string, 1)
	cmd.Stderr = &lineWatcher{match: func(line string) {
		if m := listenLine.FindStringSubmatch(line); m != nil {
			select {
			case addr <- m[1]:
			default:
			}
		}
	}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var a string
	select {
	case a = <-addr:
	case <-time.After(60 * time.Second):
		t.Fatal("server did not start within 60s")
	}
	p := &proc{cmd: cmd, url: "https://" + a, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test against its own self-signed server
	}}}
	return p
}

func (p *proc) do(t *testing.T, method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, p.url+path, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if p.admin != "" {
		req.Header.Set("Authorization", "Bearer "+p.admin)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// TestCrashDuringRegistrations kills the server with SIGKILL in the middle
// of a burst of registrations and restarts it: every registration that was
// answered 200 is there, and no token is consumed without its envoy.
func TestCrashDuringRegistrations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin := buildServer(t)
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy")
	if err := os.MkdirAll(pol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pol, "p.cue"), []byte(servertest.DefaultPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`server:
  api_listen: 127.0.0.1:0
  grpc_listen: 127.0.0.1:0
  hostname: 127.0.0.1
  data_dir: %s
policy:
  dir: %s
bootstrap:
  rate_limit: {per_second: -1}
`, filepath.Join(dir, "data"), pol)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, bin, config)
	admin, err := os.ReadFile(filepath.Join(dir, "data", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	p.admin = strings.TrimSpace(string(admin))

	const nTokens = 40
	tokens := make([]apiv1.TokenCreated, nTokens)
	for i := range tokens {
		code, body, err := p.do(t, "POST", "/api/v1/tokens", apiv1.TokenCreateRequest{Pattern: fmt.Sprintf("tok%d.example.com", i)})
		if err != nil || code != 201 {
			t.Fatalf("create token: %d %s %v", code, body, err)
		}
		_ = json.Unmarshal(body, &tokens[i])
	}
	// Registrations prepared beforehand: key generation is not what we test.
	type reg struct {
		req apiv1.RegisterRequest
	}
	var regs []reg
	for i := 0; i < 400; i++ {
		r := servertest.NewIdentity(t, fmt.Sprintf("h%d.trusted.test", i)).Req
		regs = append(regs, reg{r})
	}
	for i := range tokens {
		r := servertest.NewIdentity(t, fmt.Sprintf("tok%d.example.com", i)).Req
		r.Token = tokens[i].Token
		regs = append(regs, reg{r})
	}

	var (
		mu    sync.Mutex
		acked = map[string]string{} // uuid -> hostname
		next  atomic.Int64
		ok    atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(regs) {
					return
				}
				code, body, err := p.do(t, "POST", "/api/v1/bootstrap/register", regs[i].req)
				if err != nil || code != 200 {
					continue
				}
				var r apiv1.RegisterResponse
				if json.Unmarshal(body, &r) == nil {
					mu.Lock()
					acked[r.UUID] = r.Hostname
					mu.Unlock()
					ok.Add(1)
				}
			}
		}()
	}
	// Kill once part of the burst has been answered.
	for deadline := time.Now().Add(3 * time.Minute); ok.Load() < 60; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d registrations answered within 3 minutes", ok.Load())
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	cancel()
	wg.Wait()
	t.Logf("%d registrations acknowledged before SIGKILL", len(acked))

	p2 := startProc(t, bin, config)
	p2.admin = p.admin
	code, body, err := p2.do(t, "GET", "/api/v1/envoys", nil)
	if err != nil || code != 200 {
		t.Fatalf("list envoys after restart: %d %v", code, err)
	}
	var envoys []apiv1.Envoy
	if err := json.Unmarshal(body, &envoys); err != nil {
		t.Fatal(err)
	}
	have := map[string]apiv1.Envoy{}
	byToken := map[string]string{}
	for _, e := range envoys {
		have[e.UUID] = e
		if e.TokenID != "" {
			byToken[e.TokenID] = e.UUID
		}
	}
	for id, host := range acked {
		if e, ok := have[id]; !ok || e.Hostname != host {
			t.Errorf("acknowledged registration of %s (%s) lost in the crash", host, id)
		}
	}
	code, body, err = p2.do(t, "GET", "/api/v1/tokens", nil)
	if err != nil || code != 200 {
		t.Fatalf("list tokens: %d %v", code, err)
	}
	var toks []apiv1.Token
	_ = json.Unmarshal(body, &toks)
	for _, tk := range toks {
		switch {
		case tk.State == "used" && byToken[tk.ID] != tk.UsedBy:
			t.Errorf("token %s consumed by %s but that envoy does not exist", tk.ID, tk.UsedBy)
		case tk.State != "used" && byToken[tk.ID] != "":
			t.Errorf("envoy %s enrolled with token %s, which is not consumed", byToken[tk.ID], tk.ID)
		}
	}
}

// lineWatcher is an io.Writer that calls match with each complete line.
type lineWatcher struct {
	mu    sync.Mutex
	buf   []byte
	match func(line string)
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.match(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
