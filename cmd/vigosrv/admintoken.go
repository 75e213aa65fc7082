package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/server"
)

func newAdminTokenCmd(o *opts, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin-token",
		Short: "Manage the server's own admin token (named tokens: vigocli admin-tokens)",
		Args:  cobra.NoArgs,
	}
	var grace time.Duration
	var from string
	rotate := &cobra.Command{
		Use:   "rotate [--grace 1h] [--token-file FILE]",
		Short: "Replace the server's admin token; the previous one stays valid for a grace period",
		Long: `rotate writes a new admin token to the token file (admin.token_file, by default
vigo-data/admin.token, 0600) and its hash to the file the server checks. The previous token
stays accepted for --grace (1h by default) so that scripts can be moved over; --grace 0 ends
it at once (after a leak). A running server takes the new token at its next admin request:
no restart, and the rotation appears in its audit log (admin_token.rotated).

It reads the same configuration as serve (--config, --data-dir) and runs on the server's
host. It never prints the token: vigocli on this host reads the token file.

With several replicas, each has its own token files: rotate on one, then install the same
token on the others with --token-file (a copy of the new admin.token). Running it again with
the same token changes nothing.

People and CI should rather have named tokens (vigocli admin-tokens create --name alice),
revocable one by one and named in the audit log.`,
		Example: `  vigosrv admin-token rotate --config /etc/vigo/server.yaml
  vigosrv admin-token rotate --grace 0                   # after a leak
  vigosrv admin-token rotate --token-file /tmp/admin.token  # the same token on another replica`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.load()
			if err != nil {
				return &codeError{code: 2, err: err}
			}
			var tok string
			if from != "" {
				b, err := os.ReadFile(from)
				if err != nil {
					return &codeError{code: 2, err: fmt.Errorf("--token-file: %w", err)}
				}
				tok = string(b)
			}
			p := cfg.StatePaths()
			r, err := server.RotateAdminToken(p, tok, grace, time.Now())
			if err != nil {
				return err
			}
			switch {
			case r.Unchanged:
				fmt.Fprintf(stdout, "the admin token in %s already is this token: nothing changed\n", p.AdminToken)
			case r.PreviousUntil.IsZero():
				fmt.Fprintf(stdout, "rotated the admin token: the new one is in %s; the previous one is no longer accepted\n", p.AdminToken)
			default:
				fmt.Fprintf(stdout, "rotated the admin token: the new one is in %s; the previous one is accepted until %s (%s)\n",
					p.AdminToken, r.PreviousUntil.Format(time.RFC3339), grace)
			}
			return nil
		},
	}
	rotate.Flags().DurationVar(&grace, "grace", time.Hour, "how long the previous token stays accepted (0: not at all)")
	rotate.Flags().StringVar(&from, "token-file", "", "install this token (a copy of another replica's admin.token) instead of generating one")
	cmd.AddCommand(rotate)
	return cmd
}
