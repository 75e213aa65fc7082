package main

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

func newTokensCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Generate, list and revoke one-time enrollment tokens",
		Long: `One-time enrollment tokens let a host enroll when no policy rule admits it.
A token is bound to a hostname pattern, expires (default 24h, capped by the policy's
tokens.max_ttl), is used once, and is shown only when generated.`,
	}
	var pattern, ttl, note string
	var quiet bool
	gen := &cobra.Command{
		Use:   "generate --pattern PATTERN [--ttl DURATION] [--note TEXT]",
		Short: "Generate a token and print it (once) with the bootstrap one-liner",
		Example: `  vigocli tokens generate --pattern web1.example.com
  vigocli tokens generate --pattern '*.build.example.com' --ttl 2h --note "CI runners"
  export VIGO_TOKEN=$(vigocli tokens generate -q --pattern web1.example.com)   # the token alone`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pattern == "" {
				return &codeError{code: 2, err: fmt.Errorf("--pattern is required (a hostname or a glob such as '*.web.example.com')")}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var out apiv1.TokenCreated
			if err := c.do(cmd.Context(), "POST", "/api/v1/tokens", apiv1.TokenCreateRequest{Pattern: pattern, TTL: ttl, Note: note}, &out); err != nil {
				return err
			}
			if quiet {
				fmt.Fprintln(g.stdout, oneLine(out.Token))
				return nil
			}
			if g.structured() {
				return g.printData(out)
			}
			fmt.Fprintf(g.stdout, "Token (shown once, keep it secret):\n\n  %s\n\n", oneLine(out.Token))
			fmt.Fprintf(g.stdout, "id %s, for hostnames matching %s, expires %s\n\n", oneLine(out.ID), oneLine(out.Pattern), fmtTime(&out.ExpiresAt))
			fmt.Fprintf(g.stdout, "Enroll the host with:\n\n  %s\n", oneLine(out.Command))
			return nil
		},
	}
	gen.Flags().StringVar(&pattern, "pattern", "", "hostname or glob the token may enroll (required)")
	gen.Flags().StringVar(&ttl, "ttl", "", "lifetime, e.g. 30m or 24h (default 24h)")
	gen.Flags().StringVar(&note, "note", "", "free text shown by tokens list")
	gen.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the token, for scripts (the one-liner is not printed)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var out []apiv1.Token
			if err := c.do(cmd.Context(), "GET", "/api/v1/tokens", nil, &out); err != nil {
				return err
			}
			if g.structured() {
				return g.printData(out)
			}
			t := newTable(g.stdout, "ID", "PATTERN", "STATE", "EXPIRES", "USED BY", "NOTE")
			for _, tok := range out {
				t.row(tok.ID, tok.Pattern, tok.State, g.age(&tok.ExpiresAt), dash(tok.UsedBy), tok.Note)
			}
			return t.flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an unused token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var out apiv1.Token
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/tokens/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			if g.structured() {
				return g.printData(out)
			}
			fmt.Fprintf(g.stdout, "token %s revoked\n", oneLine(out.ID))
			return nil
		},
	}
	cmd.AddCommand(printsData(gen), printsData(list), printsData(revoke))
	return cmd
}
