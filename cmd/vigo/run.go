package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/agent"
)

func newRun(base agent.Config, logger func() *slog.Logger, selfUpdateOn bool) *cobra.Command {
	var dir string
	var once bool
	cmd := &cobra.Command{
		Use:   "run [--config-dir DIR] [--once]",
		Short: "Check in with the server every interval (the service)",
		Long: `Check in with the server every interval, as the vigo-envoy service does.

When a check-in asks for another agent version, vigo run downloads it over
mTLS, checks its SHA-256 and its signature over version, platform and digest
(with the key pinned at registration or, if none was, the server's key, fetched
over mTLS and pinned then); refuses a version older than its own unless the
operator allowed the downgrade; keeps the current binary as <binary>.previous, and restarts
into the new one with the same arguments (Windows: exits, and the service
manager starts the new binary). With --once, the new binary checks in once
more, reporting its version, and exits with that check-in's result.

With --once, a refusal of this envoy's certificate at the TLS handshake
(which carries no reason) is confirmed by two more attempts, 1 s and 2 s
apart, before it counts as a revocation: the same rule as the service's.

Exit status: 0 on success, 1 on failure, 3 when the server refuses this
envoy for good (revoked, replaced or unknown: register again).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := base
			cfg.Dir, cfg.Logger = dir, logger()
			if cfg.Version == "" {
				cfg.Version = agent.Version
			}
			var a *agent.Agent
			if cfg.Update == nil && selfUpdateOn {
				bin, err := executable()
				if err != nil {
					return err
				}
				// a is set below, before the first check-in can call this.
				cfg.Update = agent.SelfUpdate(func() *agent.Enrollment { return a.Enrollment() }, cfg.Version, bin, os.Args, cfg.Logger)
			}
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			defer a.Close()
			if once {
				res, err := a.CheckinConfirmed(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "checked in as envoy %s (agent %s); next check-in in %s\n", a.Enrollment().File.UUID, cfg.Version, res.Next.Round(time.Second))
				return nil
			}
			return serve(cmd.Context(), cfg.Logger, func(ctx context.Context) error {
				cfg.Logger.Info("vigo agent started", "envoy_uuid", a.Enrollment().File.UUID, "server", a.Enrollment().File.GRPCAddress, "version", cfg.Version)
				return a.Run(ctx)
			})
		},
	}
	cmd.Flags().StringVar(&dir, "config-dir", agent.DefaultDir, "folder written by vigo register")
	cmd.Flags().BoolVar(&once, "once", false, "check in once and exit (0 on success)")
	return cmd
}

func newStatus() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "status [--config-dir DIR]",
		Short: "Show this host's enrollment",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			enr, err := agent.Load(dir)
			if err != nil {
				return err
			}
			st, err := agent.ReadStatus(dir)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			c := enr.Certificate()
			fmt.Fprintf(out, "uuid:           %s\n", enr.File.UUID)
			fmt.Fprintf(out, "hostname:       %s\n", enr.File.Hostname)
			fmt.Fprintf(out, "server:         %s\n", enr.File.ServerURL)
			fmt.Fprintf(out, "grpc:           %s\n", enr.File.GRPCAddress)
			fmt.Fprintf(out, "certificate:    valid until %s\n", c.NotAfter.UTC().Format(time.RFC3339))
			last := "never"
			if !st.LastCheckin.IsZero() {
				last = st.LastCheckin.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(out, "last check-in:  %s\n", last)
			if st.LastError != "" {
				fmt.Fprintf(out, "last error:     %s (at %s)\n", st.LastError, st.LastAttempt.UTC().Format(time.RFC3339))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "config-dir", agent.DefaultDir, "folder written by vigo register")
	return cmd
}
