package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// TestSystemdUnitVerifies (issue 16, item 6): examples/vigosrv.service
// passes `systemd-analyze verify` (systemd need not run) without a single
// complaint, with ExecStart pointed at a freshly built vigosrv, and keeps
// its hardening.
func TestSystemdUnitVerifies(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "..", "examples", "vigosrv.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ProtectSystem=strict", "ReadWritePaths=/var/lib/vigo", "StateDirectory=vigo", "NoNewPrivileges=yes",
		"--data-dir /var/lib/vigo", "DynamicUser=yes", "CapabilityBoundingSet=\n", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd): the unit was not verified")
	}
	if testing.Short() {
		t.Skip("builds the server binary")
	}
	bin := buildServer(t)
	path := filepath.Join(t.TempDir(), "vigosrv.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/vigosrv", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	// verify exits 0 on directives it ignores: any output is a finding.
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestComposeExample (issue 16, item 6): the docker-compose example (two
// replicas, PostgreSQL, a TCP load balancer) is a valid compose project
// for `docker compose config` (or docker-compose), and its server.yaml
// loads.
func TestComposeExample(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "compose")
	cfg, err := server.LoadConfig(filepath.Join(dir, "server.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database.Driver != "postgres" || cfg.Policy.Dir == "" {
		t.Errorf("compose server.yaml: driver %q, policy dir %q", cfg.Database.Driver, cfg.Policy.Dir)
	}
	var compose []string
	if exec.Command("docker", "compose", "version").Run() == nil {
		compose = []string{"docker", "compose"}
	} else if _, err := exec.LookPath("docker-compose"); err == nil {
		compose = []string{"docker-compose"}
	} else {
		t.Skip("neither docker compose nor docker-compose is installed: the compose file was not validated")
	}
	cmd := exec.Command(compose[0], append(compose[1:], "-f", "docker-compose.yml", "config", "-q")...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("%s config: %v\n%s", strings.Join(compose, " "), err, out)
	}
}

// TestContainerConfigLoads: the image's server.yaml loads and puts the
// data in the volume and the agents in the image.
func TestContainerConfigLoads(t *testing.T) {
	cfg, err := server.LoadConfig(filepath.Join("..", "..", "examples", "container", "server.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.DataDir != "/srv/vigo" || cfg.Agent.DistDir != "/usr/share/vigo/dist" {
		t.Errorf("container server.yaml: data_dir %q, agent.dist_dir %q", cfg.Server.DataDir, cfg.Agent.DistDir)
	}
}

// TestMonitoringExamples (issue 17, item 3): the alert rules pass
// `promtool check rules`, and every vigo_ metric the rules and the Grafana
// dashboard use is one the server exports (a renamed metric would leave
// an alert that never fires).
func TestMonitoringExamples(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "monitoring")
	var used []string
	for _, f := range []string{"alerts.yml", "grafana-dashboard.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		used = append(used, regexp.MustCompile(`\bvigo_[a-z_]+`).FindAllString(string(b), -1)...)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "grafana-dashboard.json"))
	if err := json.Unmarshal(b, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("the dashboard is not a Grafana dashboard: %v", err)
	}

	in := servertest.Start(t, servertest.Options{})
	// Histograms and counters with labels appear once observed: one
	// registration and one check of every kind is enough.
	in.Register(t, servertest.NewIdentity(t, "a.approved.test").Req)
	in.Register(t, servertest.NewIdentity(t, "nobody.example.org").Req)
	_, metrics := in.Do(t, "GET", "/metrics", nil, true)
	for _, m := range used {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
		if !regexp.MustCompile(`(?m)^# HELP ` + base + ` `).Match(metrics) {
			t.Errorf("the monitoring examples use %s, which the server does not export", m)
		}
	}

	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool is not installed (apt-get install prometheus): the rules were not checked")
	}
	out, err := exec.Command("promtool", "check", "rules", filepath.Join(dir, "alerts.yml")).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
}
