package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/agent"
)

// tokenEnv is the environment variable read for the token when --token is
// absent.
const tokenEnv = "VIGO_TOKEN"

func newRegister(base agent.Config, logger func() *slog.Logger) *cobra.Command {
	var p agent.RegisterParams
	cmd := &cobra.Command{
		Use:   "register [--server HOST[:8443]] [--token T | $VIGO_TOKEN] [--hostname H] [--force] [--config-dir DIR] [--ca-fingerprint SHA256]",
		Short: "Register this host with the server, then check in once over mTLS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if p.Server == "" {
				// An enrolled host re-registers with its own server, as
				// in `vigo register --token T --force`: the server and
				// the hostname come from the saved enrollment, whose CA
				// then authenticates the server.
				enr, err := agent.Load(p.Dir)
				if err != nil {
					return &usageError{fmt.Errorf("register: --server is required: this host has no enrollment in %s (%w)", p.Dir, err)}
				}
				p.Server = enr.File.ServerURL
				if p.Hostname == "" {
					p.Hostname = enr.File.Hostname
				}
			}
			if !cmd.Flags().Changed("token") {
				// The bootstrap script passes the token in the environment:
				// unlike arguments, it does not show in ps.
				p.Token = os.Getenv(tokenEnv)
			}
			p.Logger = logger()
			if base.Now != nil {
				p.Now = base.Now
			}
			enr, err := agent.Register(cmd.Context(), p)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "registered %s as envoy %s (certificate valid until %s)\n",
				enr.File.Hostname, enr.File.UUID, enr.Certificate().NotAfter.UTC().Format("2006-01-02 15:04 MST"))
			cfg := base
			cfg.Dir, cfg.Logger = p.Dir, p.Logger
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			defer a.Close()
			if _, err := a.CheckinOnce(cmd.Context()); err != nil {
				return fmt.Errorf("registered, but the first check-in over mTLS to %s failed: %w", enr.File.GRPCAddress, err)
			}
			fmt.Fprintf(out, "checked in over mTLS at %s: this host is enrolled\n", a.Enrollment().File.GRPCAddress)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Server, "server", "", "server `HOST[:PORT]` or https URL (port 8443 by default; default on an enrolled host: its server)")
	f.StringVar(&p.Token, "token", "", "one-time enrollment token, when the policy needs one (default $"+tokenEnv+"; the variable keeps it out of ps)")
	f.StringVar(&p.Hostname, "hostname", "", "hostname to register (default: the enrolled one without --server, else this host's)")
	f.BoolVar(&p.Force, "force", false, "replace an active envoy with the same hostname")
	f.StringVar(&p.Dir, "config-dir", agent.DefaultDir, "folder for the key, certificates and config")
	f.StringVar(&p.CAFingerprint, "ca-fingerprint", "", "hex SHA-256 of the server's CA certificate to pin (default: trust on first use, like curl -k)")
	return cmd
}
