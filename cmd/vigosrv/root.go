package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	config     string
	logFormat  string
	logLevel   string
	dataDir    string
	policyDir  string
	policyGit  string
	hostname   string
	apiListen  string
	grpcListen string
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
	// Each override also reads an environment variable, which is how a
	// container is configured without a server.yaml of its own.
	pf.StringVar(&o.dataDir, "data-dir", os.Getenv("VIGO_DATA_DIR"), "override server.data_dir (env VIGO_DATA_DIR)")
	pf.StringVar(&o.policyDir, "policy-dir", os.Getenv("VIGO_POLICY_DIR"), "override policy.dir, a local policy folder (env VIGO_POLICY_DIR)")
	pf.StringVar(&o.policyGit, "policy-git", os.Getenv("VIGO_POLICY_GIT_URL"), "override policy.git.url, a policy repository on its default branch main (env VIGO_POLICY_GIT_URL)")
	pf.StringVar(&o.hostname, "hostname", os.Getenv("VIGO_HOSTNAME"), "override server.hostname, the name agents dial (env VIGO_HOSTNAME)")
	pf.StringVar(&o.apiListen, "api-listen", os.Getenv("VIGO_API_LISTEN"), "override server.api_listen (env VIGO_API_LISTEN)")
	pf.StringVar(&o.grpcListen, "grpc-listen", os.Getenv("VIGO_GRPC_LISTEN"), "override server.grpc_listen (env VIGO_GRPC_LISTEN)")
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
			if os.Getenv(containerEnv) != "" {
				if msg := dataVolumeWarning(readMountInfo(), cfg.Server.DataDir); msg != "" {
					logger.Warn(msg, "data_dir", cfg.Server.DataDir)
				}
				if h := cfg.Server.Hostname; h == "localhost" || net.ParseIP(h).IsLoopback() {
					logger.Warn("server.hostname is "+h+": only hosts on this machine can enroll; set VIGO_HOSTNAME to the name other hosts reach this server by", "hostname", h)
				}
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
			hupDone := make(chan struct{})
			defer func() {
				// Stop listening before Close: no reload after it.
				signal.Stop(hup)
				close(hupDone)
			}()
			go func() {
				for {
					select {
					case <-hup:
						logger.Info("SIGHUP: reloading the policy and the agent distribution")
						srv.Reload()
					case <-hupDone:
						return
					}
				}
			}()
			if o.logFormat == "json" {
				// Every line of a JSON log is JSON: log collectors parse them.
				logger.Info("serving", "https", srv.APIAddr().String(), "grpc", srv.GRPCAddr().String(), "admin_token_file", srv.AdminTokenFile)
			} else {
				fmt.Fprintf(stderr, "vigosrv: HTTPS on %s, gRPC on %s; admin token in %s\n", srv.APIAddr(), srv.GRPCAddr(), srv.AdminTokenFile)
			}
			return srv.Run(ctx)
		},
	}
	serve.Flags().StringVar(&o.logFormat, "log-format", envOr("VIGO_LOG_FORMAT", "text"), "log format: text or json (env VIGO_LOG_FORMAT)")
	serve.Flags().StringVar(&o.logLevel, "log-level", envOr("VIGO_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env VIGO_LOG_LEVEL)")

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
	root.AddCommand(serve, check, newBackupCmd(o, stdout, stderr), newRestoreCmd(o, stdout), newHealthcheckCmd(o, stdout),
		newAdminTokenCmd(o, stdout), newCACmd(o, stdout, stderr), version)
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
	if o.hostname != "" {
		cfg.Server.Hostname = o.hostname
	}
	if o.apiListen != "" {
		cfg.Server.APIListen = o.apiListen
	}
	if o.grpcListen != "" {
		cfg.Server.GRPCListen = o.grpcListen
	}
	switch {
	case o.policyDir != "" && o.policyGit != "":
		return nil, errors.New("--policy-dir (VIGO_POLICY_DIR) and --policy-git (VIGO_POLICY_GIT_URL): set one, not both")
	case o.policyDir != "":
		cfg.Policy.Dir = o.policyDir
		cfg.Policy.Git = nil
	case o.policyGit != "":
		cfg.Policy.Dir = ""
		cfg.Policy.Git = &server.GitConfig{URL: o.policyGit}
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
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
