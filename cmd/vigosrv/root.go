package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/schemas/buildinfo"
	"github.com/vigo-enroll/vigo/server"
)

type exitCoder interface{ ExitCode() int }

type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }
func (e *codeError) ExitCode() int { return e.code }

func run(args []string) int {
	root := newRootCmd(os.Stdout, os.Stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "vigosrv: "+err.Error())
	var ec exitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

type opts struct {
	config    string
	logFormat string
	logLevel  string
	dataDir   string
	policyDir string
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &opts{}
	root := &cobra.Command{
		Use:   "vigosrv",
		Short: "The Vigo Enroll server: enrollment over HTTPS, check-ins over gRPC with mTLS, policy from Git",
		Long: `vigosrv turns new machines into managed envoys. A host runs

    curl -sSfk https://SERVER:8443/bootstrap | sudo sh

and is enrolled when the enrollment policy (CUE files in a Git repository or a local
folder) or a one-time token allows it.

With no configuration file it starts on built-in defaults: HTTPS on :8443, gRPC on :1530,
a self-signed CA, SQLite and the admin token in ./vigo-data, and no policy source (only
token enrollment). examples/server.yaml documents every setting.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&o.config, "config", os.Getenv("VIGO_CONFIG_FILE"), "server.yaml to load (env VIGO_CONFIG_FILE; default: built-in defaults)")
	pf.StringVar(&o.dataDir, "data-dir", "", "override server.data_dir")
	pf.StringVar(&o.policyDir, "policy-dir", "", "override policy.dir (a local policy folder)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &codeError{code: 2, err: fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})

	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run the server (SIGTERM or Ctrl-C stops it gracefully; SIGHUP reloads the policy)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(stderr, o.logFormat, o.logLevel)
			if err != nil {
				return &codeError{code: 2, err: err}
			}
			cfg, err := o.load()
			if err != nil {
				return &codeError{code: 2, err: err}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := server.New(ctx, cfg, logger)
			if err != nil {
				return err
			}
			defer srv.Close()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					logger.Info("SIGHUP: reloading the policy and the agent distribution")
					srv.Reload()
				}
			}()
			fmt.Fprintf(stderr, "vigosrv: HTTPS on %s, gRPC on %s; admin token in %s\n", srv.APIAddr(), srv.GRPCAddr(), srv.AdminTokenFile)
			return srv.Run(ctx)
		},
	}
	serve.Flags().StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	serve.Flags().StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")

	check := &cobra.Command{
		Use:   "check-config",
		Short: "Validate the configuration without serving",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.load()
			if err != nil {
				return err
			}
			src := "none (token enrollment only)"
			switch {
			case cfg.Policy.Dir != "":
				src = "folder " + cfg.Policy.Dir
			case cfg.Policy.Git != nil:
				src = "git " + cfg.Policy.Git.URL + " (" + cfg.Policy.Git.Ref + ")"
			}
			fmt.Fprintf(stdout, "configuration is valid: https %s, grpc %s, data %s, database %s, policy %s\n",
				cfg.Server.APIListen, cfg.Server.GRPCListen, cfg.Server.DataDir, cfg.Database.Driver, src)
			return nil
		},
	}
	var format string
	version := &cobra.Command{
		Use:   "version",
		Short: "Print the server's version, commit and Go version (-o json for a JSON object)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printVersion(stdout, "vigosrv", buildinfo.Get(), format)
		},
	}
	version.Flags().StringVarP(&format, "output", "o", "text", "output format: text or json")
	root.AddCommand(serve, check, newBenchCmd(stdout, stderr), version)
	return root
}

// printVersion prints a build as "vigosrv v1.2.3 (commit …, go1.26.8,
// linux/amd64)", or as JSON.
func printVersion(w io.Writer, program string, b buildinfo.Info, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(b)
	case "text", "":
		_, err := fmt.Fprintf(w, "%s %s\n", program, b)
		return err
	}
	return &codeError{code: 2, err: fmt.Errorf("-o %s: must be text or json", format)}
}

func (o *opts) load() (*server.Config, error) {
	cfg, err := server.LoadConfig(o.config)
	if err != nil {
		return nil, err
	}
	if o.dataDir != "" {
		cfg.Server.DataDir = o.dataDir
	}
	if o.policyDir != "" {
		cfg.Policy.Dir = o.policyDir
		cfg.Policy.Git = nil
	}
	return cfg, nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: must be debug, info, warn or error", level)
	}
	ho := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("--log-format %q: must be text or json", format)
}
