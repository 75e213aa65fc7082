package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/agent/service"
)

// serviceFlags are the flags shared by the service subcommands; the
// bootstrap scripts pass --binary and --config-dir.
type serviceFlags struct {
	binary, configDir, root string
	skipCommands            bool
}

// params resolves the flags into service.Params: the binary defaults to
// this executable (symlinks resolved, so that a service started through a
// link keeps working when the link moves), and both paths are made absolute.
func (f *serviceFlags) params(out io.Writer) (service.Params, error) {
	bin := f.binary
	if bin == "" {
		exe, err := executable()
		if err != nil {
			return service.Params{}, err
		}
		bin = exe
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return service.Params{}, fmt.Errorf("service: binary %s: %w", f.binary, err)
	}
	dir, err := filepath.Abs(f.configDir)
	if err != nil {
		return service.Params{}, fmt.Errorf("service: config dir %s: %w", f.configDir, err)
	}
	p := service.Params{BinaryPath: bin, ConfigDir: dir, Root: f.root}
	if f.skipCommands {
		p.Runner = func(_ context.Context, name string, args ...string) ([]byte, error) {
			fmt.Fprintf(out, "skipped: %s %s\n", name, strings.Join(args, " "))
			return nil, nil
		}
	}
	return p, nil
}

// executable returns the absolute path of the running binary with symlinks
// resolved.
func executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find this executable: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return exe, nil
}

func newService() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service install|uninstall|start|stop [--binary PATH] [--config-dir DIR] [--root DIR]",
		Short: "Install, remove, start or stop the vigo-envoy system service",
		Long: `Install, remove, start or stop the vigo-envoy system service, which runs
"vigo run --config-dir DIR" at boot and restarts it when it fails.

Per platform: a systemd unit (Linux), a launchd daemon (macOS), an rc.d
script (FreeBSD, NetBSD, OpenBSD), an SMF manifest (illumos) or a service
registered with sc.exe (Windows). Run as root (Administrator on Windows).

install writes the service's files and enables it at boot without starting
it; start starts it, or restarts it when it runs; stop stops it (it starts
again at boot); uninstall stops it and removes it (not installed is fine).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &usageError{fmt.Errorf("service: name an action: install, uninstall, start or stop")}
		},
	}
	actions := []struct {
		name, short string
		do          func(context.Context, string, service.Params) error
		done        string
	}{
		{"install", "Write the service's files and enable it at boot (does not start it)", service.Install, "installed"},
		{"uninstall", "Stop the service and remove it (a service that is not installed is fine)", service.Uninstall, "uninstalled"},
		{"start", "Start the service, or restart it when it runs", service.Start, "started"},
		{"stop", "Stop the service (it starts again at boot)", service.Stop, "stopped"},
	}
	for _, a := range actions {
		var f serviceFlags
		sub := &cobra.Command{
			Use:   a.name + " [--binary PATH] [--config-dir DIR] [--root DIR]",
			Short: a.short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				p, err := f.params(cmd.OutOrStdout())
				if err != nil {
					return err
				}
				if err := a.do(cmd.Context(), runtime.GOOS, p); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "service %s %s\n", service.Name, a.done)
				return nil
			},
		}
		fl := sub.Flags()
		fl.StringVar(&f.binary, "binary", "", "path of the vigo binary the service runs (default: this executable, symlinks resolved)")
		fl.StringVar(&f.configDir, "config-dir", agent.DefaultDir, "folder written by vigo register, passed to vigo run")
		fl.StringVar(&f.root, "root", "", "write and remove the service's files under this folder instead of / (image builds)")
		fl.BoolVar(&f.skipCommands, "skip-commands", false, "print the platform commands (systemctl, launchctl, sc.exe...) instead of running them")
		cmd.AddCommand(sub)
	}
	return cmd
}
