package main

import (
	"io"

	"github.com/spf13/cobra"
)

// newBenchCmd is the fleet simulator (filled in with the load tool).
func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{Use: "bench", Short: "Fleet simulator", Hidden: true, RunE: func(*cobra.Command, []string) error { return nil }}
}
