package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/agent"
)

func newRun(base agent.Config, logger func() *slog.Logger) *cobra.Command {
	var dir string
	var once bool
	cmd := &cobra.Command{
		Use:   "run [--config-dir DIR] [--once]",
		Short: "Check in with the server every interval (the service)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := base
			cfg.Dir, cfg.Logger = dir, logger()
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			defer a.Close()
			if once {
				res, err := a.CheckinOnce(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "checked in as envoy %s; next check-in in %s\n", a.Enrollment().File.UUID, res.Next.Round(time.Second))
				return nil
			}
			cfg.Logger.Info("vigo agent started", "envoy_uuid", a.Enrollment().File.UUID, "server", a.Enrollment().File.GRPCAddress, "version", agent.Version)
			return a.Run(cmd.Context())
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
