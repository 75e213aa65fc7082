package main

import (
	"errors"
	"fmt"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

func newAdminTokensCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin-tokens",
		Short: "Create, list and revoke named admin tokens with a role (admin or read-only)",
		Long: `Named admin tokens let people and programs use the admin API under their own name, which
audit events record as the actor, and with a role:

  read-only  reads envoys, enrollment tokens (never their secrets), the audit log, the policy
             status and the server's version, and asks questions that change nothing
             (policy explain --against-server, policy diff --against-server, --replay,
             policy wait): what CI needs. It changes nothing.
  admin      everything, including creating and revoking admin tokens.

The server's own admin token (vigo-data/admin.token, written at first start) stays valid
with the role admin; audit events name it "admin". A token is shown once, when created.
Creating and revoking admin tokens needs the role admin.`,
	}
	var name, role string
	var quiet bool
	create := &cobra.Command{
		Use:   "create --name NAME [--role read-only|admin]",
		Short: "Create a named admin token and print it (once)",
		Example: `  vigocli admin-tokens create --name ci-github --role read-only
  vigocli admin-tokens create --name alice --role admin
  vigocli admin-tokens create --name alice --role admin -q > alice.token   # the token alone, for vigocli login --token-file`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return &codeError{code: 2, err: errors.New("--name is required: it names the token in audit events (such as ci-github)")}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var out apiv1.AdminTokenCreated
			if err := c.do(cmd.Context(), "POST", "/api/v1/admin-tokens", apiv1.AdminTokenCreateRequest{Name: name, Role: role}, &out); err != nil {
				return err
			}
			if quiet {
				fmt.Fprintln(g.stdout, out.Token)
				return nil
			}
			if g.structured() {
				return g.printData(out)
			}
			fmt.Fprintf(g.stdout, "Admin token %q with the role %s (shown once, keep it secret):\n\n  %s\n\n", out.Name, out.Role, out.Token)
			fmt.Fprintf(g.stdout, "Use it with VIGO_ADMIN_TOKEN, or --admin-token-file FILE; revoke it with:\n\n  vigocli admin-tokens revoke %s\n", out.Name)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "name of the token, shown as the actor in audit events (required)")
	create.Flags().StringVar(&role, "role", "read-only", "role: read-only or admin")
	create.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the token, for scripts and files")

	list := &cobra.Command{
		Use:   "list",
		Short: "List named admin tokens, revoked ones included (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var out []apiv1.AdminToken
			if err := c.do(cmd.Context(), "GET", "/api/v1/admin-tokens", nil, &out); err != nil {
				return err
			}
			if g.structured() {
				return g.printData(out)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tID\tCREATED\tREVOKED")
			for _, t := range out {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Role, t.ID, g.age(&t.CreatedAt), g.age(t.RevokedAt))
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke the named admin token: it stops working at once",
		Args:  exactArgs(1, "the name of the token"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var out apiv1.AdminToken
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/admin-tokens/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			if g.structured() {
				return g.printData(out)
			}
			fmt.Fprintf(g.stdout, "revoked admin token %q (%s, id %s)\n", out.Name, out.Role, out.ID)
			return nil
		},
	}
	cmd.AddCommand(printsData(create), printsData(list), printsData(revoke))
	return cmd
}
