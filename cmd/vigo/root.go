package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/agent"
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
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agent version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "vigo %s\n", agent.Version)
			return nil
		},
	}
}
