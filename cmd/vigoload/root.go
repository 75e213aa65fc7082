package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/agent/fleetsim"
)

const benchLong = `vigoload simulates a fleet of envoys against running servers and measures them.

It is the project's load tool, a binary of its own: the server does not link agent code.

It registers --envoys envoys over HTTPS (the trusted path: parallel, over keep-alive
connections), then sends signed check-ins over mutual-TLS gRPC for --duration at --rate
check-ins per second (0 = as fast as the servers answer), printing progress every second,
and ends with throughput, latency percentiles (p50, p99), errors and each server's RSS.

Prepare the server(s):
  - a policy that trusts the bench hostnames from this machine, e.g.
        trusted_enrollment: [{name: "bench", pattern: "*.bench.test", cidrs: ["127.0.0.0/8", "::1/128"]}]
  - the registration rate limit off: bootstrap.rate_limit.per_second: -1
    (otherwise registrations from one address are refused after the burst),
    and the per-envoy check-in limit off: bootstrap.checkin_rate_limit.per_second: -1
    (otherwise an envoy checking in more than once a second is refused);
  see examples/bench-server.yaml.

Every simulated envoy has its own Ed25519 key and certificate and signs its own
check-ins. The server binds a check-in to the client certificate of its connection,
so envoys cannot share one: --connections C bounds the connections open at once.
With C >= --envoys every envoy keeps one persistent connection (as real agents do);
with fewer, each connection carries one check-in of one envoy and is then replaced
by the next envoy's, so every check-in costs a TLS handshake (100,000 real
connections from one process would exceed its file descriptors). --resume keeps each
envoy's TLS session and resumes it at its next connection, as agents do: the handshake
then skips the certificates and their signatures.

The report ends with the server CPU per check-in: the servers' CPU time during the
check-in phase (from /proc/PID/stat with --server-pid, else process_cpu_seconds_total
of GET /metrics) divided by the check-ins.

Several servers (replicas sharing one database): repeat --server or separate URLs by
commas; registrations are spread round-robin and each envoy checks in with the
replica that registered it.

Server RSS: read from /proc/PID/status when --server-pid is given (this machine only),
otherwise from each server's GET /metrics (process_resident_memory_bytes), which needs
an admin token (--admin-token-file or VIGO_ADMIN_TOKEN; the read-only role will do).

--state FILE saves the registered envoys (with their private keys: mode 0600) and,
when it exists, reuses them so that a second run skips registration.`

type benchOpts struct {
	servers     []string
	envoys      int
	rate        string
	duration    time.Duration
	connections int
	suffix      string
	insecure    bool
	caFile      string
	stateFile   string
	pids        []int
	adminToken  string
	workers     int
	resume      bool
	jsonOut     bool
	quiet       bool
}

// newRootCmd is the fleet simulator.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &benchOpts{}
	cmd := &cobra.Command{
		Use:   "vigoload",
		Short: "Fleet simulator: register N envoys, run check-ins, report throughput, latency and server RSS",
		Long:  benchLong,
		Example: `  vigoload --server https://127.0.0.1:8443 --insecure --envoys 100000 --rate 1667/s --duration 60s --state /tmp/fleet.json
  vigoload --server https://10.0.0.1:8443,https://10.0.0.2:8443 --ca-file ca.pem --envoys 1000 --rate 0`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config(stderr)
			if err != nil {
				return &codeError{code: 2, err: err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, runErr := fleetsim.Run(ctx, *cfg)
			if rep != nil && rep.State != nil && o.stateFile != "" && rep.Registration.OK > 0 {
				if err := rep.State.Save(o.stateFile); err != nil {
					return err
				}
				fmt.Fprintf(stderr, "vigoload: saved %d envoys to %s\n", len(rep.State.Envoys), o.stateFile)
			}
			if runErr != nil {
				return runErr
			}
			if o.jsonOut {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.WriteText(stdout)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.servers, "server", []string{"https://127.0.0.1:8443"}, "server HTTPS URL; repeat or separate by commas for several replicas")
	f.IntVar(&o.envoys, "envoys", 1000, "number of simulated envoys")
	f.StringVar(&o.rate, "rate", "0", "total check-ins per second, e.g. 1667 or 1667/s; 0 = saturate")
	f.DurationVar(&o.duration, "duration", 30*time.Second, "length of the check-in phase")
	f.IntVar(&o.connections, "connections", 64, "gRPC connections open at once (see above)")
	f.StringVar(&o.suffix, "hostname-suffix", ".bench.test", "suffix of the simulated hostnames; the server's policy must trust it")
	f.BoolVar(&o.insecure, "insecure", false, "do not verify the servers' HTTPS certificate at registration (check-ins verify against the CA returned then)")
	f.StringVar(&o.caFile, "ca-file", "", "PEM CA bundle that verifies the servers' HTTPS certificate")
	f.StringVar(&o.stateFile, "state", "", "file to save registered envoys to, and reuse them from on the next run")
	f.IntSliceVar(&o.pids, "server-pid", nil, "server process ids whose RSS to read from /proc (repeatable); default: GET /metrics")
	f.StringVar(&o.adminToken, "admin-token-file", "", "file with an admin token (the read-only role will do) to read the servers' GET /metrics; env VIGO_ADMIN_TOKEN")
	f.IntVar(&o.workers, "workers", 64, "registrations in flight")
	f.BoolVar(&o.jsonOut, "json", false, "print the report as JSON")
	f.BoolVar(&o.quiet, "quiet", false, "no progress lines")
	f.BoolVar(&o.resume, "resume", false, "resume each envoy's TLS session at its next connection, as agents do (with fewer --connections than --envoys)")
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &codeError{code: 2, err: fmt.Errorf("%w (see 'vigoload --help')", err)}
	})
	return cmd
}

// config turns the flags into a simulator configuration.
func (o *benchOpts) config(stderr io.Writer) (*fleetsim.Config, error) {
	rate, err := parseRate(o.rate)
	if err != nil {
		return nil, err
	}
	if o.envoys <= 0 || o.connections <= 0 || o.workers <= 0 || o.duration <= 0 {
		return nil, errors.New("--envoys, --connections, --workers and --duration must be positive")
	}
	cfg := &fleetsim.Config{
		Envoys: o.envoys, Rate: rate, Duration: o.duration, Connections: o.connections,
		HostnameSuffix: o.suffix, Insecure: o.insecure, RegisterWorkers: o.workers, ServerPIDs: o.pids,
		AdminToken: os.Getenv("VIGO_ADMIN_TOKEN"), Resume: o.resume,
	}
	if o.adminToken != "" {
		b, err := os.ReadFile(o.adminToken)
		if err != nil {
			return nil, fmt.Errorf("--admin-token-file: %w", err)
		}
		cfg.AdminToken = strings.TrimSpace(string(b))
	}
	if !strings.HasPrefix(cfg.HostnameSuffix, ".") {
		cfg.HostnameSuffix = "." + cfg.HostnameSuffix
	}
	for _, s := range o.servers {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Servers = append(cfg.Servers, s)
		}
	}
	if !o.quiet {
		cfg.Progress = stderr
	}
	if o.caFile != "" {
		data, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate", o.caFile)
		}
		cfg.RootCAs = pool
	}
	if o.stateFile != "" {
		st, err := fleetsim.LoadState(o.stateFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, err
		default:
			cfg.State = st
		}
	}
	return cfg, nil
}

// parseRate accepts "R" or "R/s".
func parseRate(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "/s"), 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("--rate %q: want a number of check-ins per second, e.g. 1667 or 1667/s (0 = saturate)", s)
	}
	return v, nil
}
