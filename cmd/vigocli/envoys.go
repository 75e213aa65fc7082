package main

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

func newEnvoysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "envoys",
		Short: "List, show, revoke, rebootstrap and update enrolled hosts",
	}
	list := newEnvoysListCmd(g)
	show := &cobra.Command{
		Use:   "show UUID|HOSTNAME",
		Short: "Show one envoy (by UUID, or the active envoy with that hostname)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var e apiv1.Envoy
			if err := c.do(cmd.Context(), "GET", "/api/v1/envoys/"+url.PathEscape(args[0]), nil, &e); err != nil {
				return err
			}
			if g.structured() {
				return g.printData(e)
			}
			printEnvoy(g, e)
			return nil
		},
	}
	revoke := newEnvoysRevokeCmd(g)
	rebootstrap := &cobra.Command{
		Use:   "rebootstrap UUID|HOSTNAME",
		Short: "Ask the envoy to re-enroll with a new key and UUID at its next check-in",
		Long: `At its next check-in the envoy is told to rebootstrap: the agent generates a new key,
registers again (as with --force) and gets a new UUID; the old UUID is revoked with reason
"rebootstrapped" and the audit log links the two. When the server serves another agent build
for the envoy's platform (agent.dist_dir), the envoy first updates to it: this is how updates
are triggered remotely.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return envoyAction(cmd, g, args[0], "rebootstrap", struct{}{}, "will rebootstrap at its next check-in")
		},
	}
	var version string
	var allowDowngrade bool
	update := &cobra.Command{
		Use:   "update UUID|HOSTNAME --version V [--allow-downgrade]",
		Short: "Ask the envoy to update its agent to a version at its next check-in",
		Long: `At its next check-in the envoy is asked to install agent version V, which the server must
serve for the envoy's platform. The agent checks the build's signature over its version,
platform and digest, and refuses a version older than the one it runs (or one it cannot
order against it, such as "dev") unless --allow-downgrade says that the rollback is
intended; the server refuses such a request without it when it knows the running version.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version == "" {
				return &codeError{code: 2, err: fmt.Errorf("--version is required")}
			}
			done := "will update to " + version + " at its next check-in"
			if allowDowngrade {
				done += " (a downgrade is allowed)"
			}
			return envoyAction(cmd, g, args[0], "update", apiv1.EnvoyUpdateRequest{Version: version, AllowDowngrade: allowDowngrade}, done)
		},
	}
	update.Flags().StringVar(&version, "version", "", "agent version to install (must be served by the server)")
	update.Flags().BoolVar(&allowDowngrade, "allow-downgrade", false, "allow a version older than the running agent's (a rollback)")
	for _, c := range []*cobra.Command{list, show, revoke, rebootstrap, update} {
		cmd.AddCommand(printsData(c))
	}
	return cmd
}

func envoyAction(cmd *cobra.Command, g *globals, id, action string, body any, done string) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	var e apiv1.Envoy
	if err := c.do(cmd.Context(), "POST", "/api/v1/envoys/"+url.PathEscape(id)+"/"+action, body, &e); err != nil {
		return err
	}
	if g.structured() {
		return g.printData(e)
	}
	fmt.Fprintf(g.stdout, "envoy %s (%s) %s\n", oneLine(e.UUID), oneLine(e.Hostname), oneLine(done))
	return nil
}

func printEnvoy(g *globals, e apiv1.Envoy) {
	t := newTable(g.stdout)
	row := func(k, v string) {
		if v != "" {
			t.row(k+":", v)
		}
	}
	row("UUID", e.UUID)
	row("Hostname", e.Hostname)
	row("Status", e.Status)
	row("Revoked", fmtTimeIf(e.RevokedAt))
	row("Revoked reason", e.RevokedReason)
	row("Revoked by policy", e.RevokedRevision)
	row("Replaced by", e.ReplacedBy)
	row("Method", e.Method)
	row("Rule", e.Rule)
	row("Policy revision", e.PolicyRevision)
	row("Token", e.TokenID)
	row("Source IP", e.SourceIP)
	row("OS/arch", e.OS+"/"+e.Arch)
	row("Enrolled", fmtTime(&e.CreatedAt))
	row("Certificate", e.CertSerial+" (expires "+fmtTime(&e.CertNotAfter)+")")
	row("Last seen", fmtTime(e.LastSeen))
	row("Agent version", e.AgentVersion)
	row("Last address", e.LastAddr)
	if e.Rebootstrap {
		row("Pending", "rebootstrap")
	}
	if e.UpdateVersion != "" {
		pending := "update to " + e.UpdateVersion
		if e.UpdateAllowDowngrade {
			pending += " (downgrade allowed)"
		}
		row("Pending", pending)
	}
	_ = t.flush()
}

func fmtTimeIf(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return fmtTime(t)
}

// short abbreviates a policy revision for tables: a commit id to 12
// characters, a local folder hash to local@sha256:<12>.
func short(rev string) string {
	if h, ok := strings.CutPrefix(rev, "local@sha256:"); ok && len(h) > 12 {
		return "local@sha256:" + h[:12]
	}
	if len(rev) > 12 && !strings.Contains(rev, "@") {
		return rev[:12]
	}
	return rev
}
