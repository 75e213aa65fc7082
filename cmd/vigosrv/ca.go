package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/carotate"
)

func newCACmd(o *opts, stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Show the server's CA and rotate it without re-enrolling the fleet",
		Long: `ca status shows the CA rotation phase, the CAs and how many active envoys hold a
certificate from each. ca rotate runs a rotation in steps, each audited and safe to repeat:

  prepare   create the next CA; agents receive both CAs at check-in and trust both
  activate  the next CA signs new and renewed certificates and the server certificates;
            envoys holding a certificate from the old CA renew at their next check-in
  finish    drop the old CA, once no active envoy holds a certificate from it
  rollback  go back one step (active -> prepared -> no rotation)

These commands work on the data folder and the database of the server (--config,
--data-dir), whether it runs or not; running servers apply each step within
server.replica_refresh. With several replicas, copy the new CA's key file (printed by
prepare) to every replica's data folder before activate.`,
		Args: cobra.NoArgs,
	}
	withRotator := func(c *cobra.Command, fn func(r *carotate.Rotator) error) error {
		cfg, err := o.load()
		if err != nil {
			return &codeError{code: 2, err: err}
		}
		logger, err := newLogger(stderr, o.logFormat, "warn")
		if err != nil {
			return &codeError{code: 2, err: err}
		}
		r, st, err := server.CARotator(c.Context(), cfg, actor(), logger)
		if err != nil {
			return err
		}
		defer st.Close()
		return fn(r)
	}
	var format string
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the rotation phase, the CAs and the envoys holding a certificate from each",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return &codeError{code: 2, err: fmt.Errorf("-o %s: must be table or json", format)}
			}
			return withRotator(c, func(r *carotate.Rotator) error {
				st, err := r.Status(c.Context())
				if err != nil {
					return err
				}
				return printCAStatus(stdout, st, format)
			})
		},
	}
	status.Flags().StringVarP(&format, "output", "o", "table", "output format: table or json")

	rotate := &cobra.Command{Use: "rotate", Short: "Rotate the CA in steps: prepare, activate, finish (or rollback)", Args: cobra.NoArgs}
	step := func(use, short string, fn func(c *cobra.Command, r *carotate.Rotator) (carotate.Result, error)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				return withRotator(c, func(r *carotate.Rotator) error {
					res, err := fn(c, r)
					if err != nil {
						if errors.Is(err, carotate.ErrOutOfOrder) || errors.Is(err, carotate.ErrEnvoysRemain) {
							return &codeError{code: 1, err: err}
						}
						return err
					}
					if res.Warning != "" {
						fmt.Fprintln(stderr, "warning: "+res.Warning)
					}
					_, err = fmt.Fprintln(stdout, res.Message)
					return err
				})
			},
		}
	}
	var force, forceActivate bool
	activate := step("activate [--force]", "Sign new and renewed certificates and the server certificates with the next CA",
		func(c *cobra.Command, r *carotate.Rotator) (carotate.Result, error) {
			return r.Activate(c.Context(), forceActivate)
		})
	activate.Flags().BoolVar(&forceActivate, "force", false, "activate although active envoys have not checked in since prepare (they must then register again)")
	finish := step("finish [--force]", "Drop the old CA once no active envoy holds a certificate from it",
		func(c *cobra.Command, r *carotate.Rotator) (carotate.Result, error) {
			return r.Finish(c.Context(), force)
		})
	finish.Flags().BoolVar(&force, "force", false, "drop the old CA although active envoys still hold certificates from it (they must then register again)")
	rotate.AddCommand(
		step("prepare", "Create the next CA and hand both CAs to agents",
			func(c *cobra.Command, r *carotate.Rotator) (carotate.Result, error) { return r.Prepare(c.Context()) }),
		activate,
		finish,
		step("rollback", "Go back one step: active to prepared, prepared to no rotation",
			func(c *cobra.Command, r *carotate.Rotator) (carotate.Result, error) { return r.Rollback(c.Context()) }),
	)
	cmd.AddCommand(status, rotate)
	return cmd
}

// actor names the operator in audit events: the OS user.
func actor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return "vigosrv ca (" + name + "@" + host + ")"
}

type caStatusJSON struct {
	Phase     string       `json:"phase"`
	UpdatedAt *time.Time   `json:"updated_at,omitempty"`
	CAs       []caInfoJSON `json:"cas"`
	// NotYetTrusting, prepared phase only: active envoys not seen since
	// the next CA is handed out.
	NotYetTrusting *int `json:"envoys_not_yet_trusting_next,omitempty"`
}

type caInfoJSON struct {
	Role        string    `json:"role"`
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	NotAfter    time.Time `json:"not_after"`
	Signing     bool      `json:"signing"`
	Envoys      int       `json:"envoys"`
}

func printCAStatus(w io.Writer, st carotate.Status, format string) error {
	out := caStatusJSON{Phase: carotate.PhaseName(st.Phase)}
	if !st.UpdatedAt.IsZero() {
		t := st.UpdatedAt
		out.UpdatedAt = &t
	}
	if st.Phase == ca.PhasePrepared {
		n := st.NotYetTrusting
		out.NotYetTrusting = &n
	}
	for _, c := range st.CAs {
		out.CAs = append(out.CAs, caInfoJSON{Role: c.Role, Fingerprint: c.Fingerprint, Subject: c.Certificate.Subject.CommonName,
			NotAfter: c.Certificate.NotAfter.UTC(), Signing: c.Signing, Envoys: c.Envoys})
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(w, "phase: %s\n", out.Phase)
	if out.NotYetTrusting != nil {
		fmt.Fprintf(w, "envoys not checked in since the next CA is handed out: %d (activate waits for 0)\n", *out.NotYetTrusting)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tSIGNING\tENVOYS\tNOT AFTER\tFINGERPRINT\tSUBJECT")
	for _, c := range out.CAs {
		fmt.Fprintf(tw, "%s\t%v\t%d\t%s\t%s\t%s\n", c.Role, c.Signing, c.Envoys, c.NotAfter.Format(time.RFC3339), c.Fingerprint, c.Subject)
	}
	return tw.Flush()
}
