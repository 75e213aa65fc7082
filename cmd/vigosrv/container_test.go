package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestDataVolumeWarning (issue 16, item 2): in the container image the
// server says at start when its data folder is not kept beyond the
// container. mountinfo lines as a Docker engine writes them.
func TestDataVolumeWarning(t *testing.T) {
	t.Parallel()
	const overlay = "800 700 0:50 / / rw,relatime - overlay overlay rw\n"
	anon := strings.Repeat("3f", 32)
	for _, tc := range []struct {
		name, mountinfo, want string
	}{
		{name: "no volume", mountinfo: overlay, want: "is not a volume"},
		{name: "anonymous volume", mountinfo: overlay + "812 800 8:1 /var/lib/docker/volumes/" + anon + "/_data /srv/vigo rw,relatime master:1 - ext4 /dev/sda1 rw\n", want: "anonymous volume"},
		{name: "named volume", mountinfo: overlay + "812 800 8:1 /var/lib/docker/volumes/vigo/_data /srv/vigo rw,relatime master:1 - ext4 /dev/sda1 rw\n"},
		{name: "bind mount", mountinfo: overlay + "812 800 8:1 /home/ops/vigo\\040data /srv/vigo rw,relatime - ext4 /dev/sda1 rw\n"},
		{name: "a named volume mounted over an anonymous one", mountinfo: overlay +
			"812 800 8:1 /var/lib/docker/volumes/" + anon + "/_data /srv/vigo rw - ext4 /dev/sda1 rw\n" +
			"813 800 8:1 /var/lib/docker/volumes/vigo/_data /srv/vigo rw - ext4 /dev/sda1 rw\n"},
		{name: "another folder is a volume", mountinfo: overlay + "812 800 8:1 /var/lib/docker/volumes/vigo/_data /srv/other rw - ext4 /dev/sda1 rw\n", want: "is not a volume"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := dataVolumeWarning([]byte(tc.mountinfo), "/srv/vigo")
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("warning %q, want one containing %q", got, tc.want)
			}
			if got != "" && !strings.Contains(got, "-v vigo:/srv/vigo") {
				t.Errorf("warning %q does not say how to keep the data", got)
			}
		})
	}
}

// TestJSONLogAndHealthcheck (issue 16, items 1 and 6): with
// VIGO_LOG_FORMAT=json every line the server writes is a JSON object (the
// start line included), a container on a fresh data folder warns that its
// data is ephemeral, and `vigosrv healthcheck` exits 0 against the running
// server and 1 when nothing answers.
func TestJSONLogAndHealthcheck(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin := buildServer(t)
	dir := t.TempDir()
	config := loopbackConfig(t, filepath.Join(dir, "server.yaml"), filepath.Join(dir, "data"))
	cmd := exec.Command(bin, "serve", "--config", config)
	cmd.Env = append(os.Environ(), "VIGO_LOG_FORMAT=json", containerEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	type record struct {
		Level, Msg, HTTPS string
	}
	serving := make(chan record, 1)
	var lines []string
	linesDone := make(chan struct{})
	go func() {
		defer close(linesDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			var r record
			if json.Unmarshal(sc.Bytes(), &r) == nil && r.Msg == "serving" {
				serving <- r
			}
		}
	}()
	var r record
	select {
	case r = <-serving:
	case <-time.After(60 * time.Second):
		t.Fatal("no JSON \"serving\" record within 60s")
	}
	_, port, _ := strings.Cut(r.HTTPS, "127.0.0.1:")
	out, err := exec.Command(bin, "healthcheck", "--config", config, "--api-listen", ":"+port).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "ready") {
		t.Errorf("healthcheck against the server: %v, %s", err, out)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	<-linesDone
	out, err = exec.Command(bin, "healthcheck", "--config", config, "--api-listen", ":"+port).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "not ready") {
		t.Errorf("healthcheck without a server: %v, %s", err, out)
	}

	ephemeral := false
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("a log line is not JSON: %q", l)
		}
		if msg, _ := m["msg"].(string); strings.Contains(msg, "data folder") && m["level"] == "WARN" {
			ephemeral = true
		}
	}
	if !ephemeral {
		t.Errorf("no warning that the data folder is not a volume in:\n%s", strings.Join(lines, "\n"))
	}
}

// TestDockerfilesShareFinalStage: the multi-stage Dockerfile (for users
// with a registry) and Dockerfile.local (make image, FROM scratch without
// pulling anything) build the same image: their final stages are the same
// but for where the file tree comes from.
func TestDockerfilesShareFinalStage(t *testing.T) {
	t.Parallel()
	final := func(name, from string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		_, stage, ok := strings.Cut(string(b), "# --- final stage")
		if !ok {
			t.Fatalf("%s has no final stage marker", name)
		}
		_, stage, _ = strings.Cut(stage, "\n")
		return strings.ReplaceAll(stage, from, "ROOTFS/")
	}
	multi, local := final("Dockerfile", "--from=build /rootfs/"), final("Dockerfile.local", "rootfs/")
	if diff := cmp.Diff(multi, local); diff != "" {
		t.Errorf("final stages differ (-Dockerfile +Dockerfile.local):\n%s", diff)
	}
	for _, want := range []string{"FROM scratch", "USER 10001:10001", "VOLUME /srv/vigo", "EXPOSE 8443 1530", "HEALTHCHECK", "vigosrv\", \"healthcheck\"]"} {
		if !strings.Contains(local, want) {
			t.Errorf("the final stage lacks %q", want)
		}
	}
}
