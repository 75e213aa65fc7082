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
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/schemas/buildinfo"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// run executes the command line args and returns the exit code. base is
// the agent configuration to start from (tests inject Now, Update…).
// selfUpdate lets `vigo run` replace this executable when the server asks
// (main turns it on; tests leave it off, so that no test replaces the test
// binary).
func run(args []string, stdout, stderr io.Writer, base agent.Config, selfUpdate bool) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(stdout, stderr, base, selfUpdate)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var usage *usageError
	var rev *agent.RevokedError
	switch {
	case errors.As(err, &rev):
		fmt.Fprintf(stderr, "vigo: %v\n", err)
		return agent.ExitRevoked
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "vigo: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "vigo: %v\n", err)
	return exitError
}

type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func newRoot(stdout, stderr io.Writer, base agent.Config, selfUpdate bool) *cobra.Command {
	var verbose bool
	root := &cobra.Command{
		Use:           "vigo",
		Short:         "Vigo Enroll agent: register this host and check in with the server",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log debug messages")
	logger := func() *slog.Logger {
		lvl := slog.LevelInfo
		if verbose {
			lvl = slog.LevelDebug
		}
		return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	}
	root.AddCommand(newRegister(base, logger), newRun(base, logger, selfUpdate), newStatus(), newService(), newVersion())
	return root
}

func newVersion() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the agent version, commit and Go version (-o json for a JSON object)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := buildinfo.Get()
			// The agent's version is the one distributions set
			// (-X agent.Version): check-ins report it and self-update
			// compares it.
			b.Version = agent.Version
			switch format {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(b)
			case "text":
				fmt.Fprintf(cmd.OutOrStdout(), "vigo %s\n", b)
				return nil
			}
			return &usageError{fmt.Errorf("-o %s: must be text or json", format)}
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "text", "output format: text or json")
	return cmd
}
