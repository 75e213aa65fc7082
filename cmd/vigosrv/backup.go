package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/schemas/atomicfile"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/ca"
)

func newBackupCmd(o *opts, stdout, stderr io.Writer) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "backup --to FILE|-",
		Short: "Write a consistent snapshot of the server's state (database, CA, keys, admin token) while it runs",
		Long: `backup writes a gzip-compressed tar archive holding an online snapshot of the SQLite
database (taken while the server runs: it is never blocked, and the copy never holds half a
transaction), the CA certificate and key (and those of a CA rotation: the next CA, or the one
a finished rotation retired), the key that signs check-in responses, and the admin
token with its hash. It reads the same configuration as serve (--config, --data-dir).

The archive holds the CA key: store it as carefully as the key itself. With PostgreSQL the
database is not included: back it up with pg_dump, and this archive for the key files.

Restore with: vigosrv restore --from FILE --data-dir DIR`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return &codeError{code: 2, err: fmt.Errorf("--to is required (a file, or - for standard output)")}
			}
			cfg, err := o.load()
			if err != nil {
				return &codeError{code: 2, err: err}
			}
			report := stdout
			var info server.BackupInfo
			if to == "-" {
				report = stderr
				info, err = server.Backup(cmd.Context(), cfg, stdout)
			} else {
				info, err = backupToFile(cmd, cfg, to)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(report, "backup written to %s: %d files", to, len(info.Files))
			if info.Database == "postgres" {
				fmt.Fprintf(report, "; the PostgreSQL database is not included: back it up with pg_dump\n")
			} else {
				fmt.Fprintf(report, ", SQLite snapshot at schema version %d\n", info.SchemaVersion)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "archive to write (0600), or - for standard output")
	return cmd
}

// backupToFile writes the archive beside path and renames it into place
// once complete, so that a failed backup never leaves a truncated archive
// under the name of a good one.
func backupToFile(cmd *cobra.Command, cfg *server.Config, path string) (server.BackupInfo, error) {
	var info server.BackupInfo
	// The archive holds the CA key: 0600.
	err := atomicfile.WriteFrom(path, 0o600, func(w io.Writer) error {
		var err error
		info, err = server.Backup(cmd.Context(), cfg, w)
		return err
	})
	if err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	return info, nil
}

func newRestoreCmd(o *opts, stdout io.Writer) *cobra.Command {
	var from string
	var force bool
	cmd := &cobra.Command{
		Use:   "restore --from FILE|- --data-dir DIR",
		Short: "Restore a backup into a data folder (never over an existing state unless --force)",
		Long: `restore puts the database, the CA, the keys and the admin token of a backup archive where
the configuration (--config, --data-dir) says they live. Every file is checked against the
archive's manifest (size and SHA-256) before anything is written. Existing files are never
overwritten unless --force, which must not be used while a server runs on that folder.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return &codeError{code: 2, err: fmt.Errorf("--from is required (a file, or - for standard input)")}
			}
			cfg, err := o.load()
			if err != nil {
				return &codeError{code: 2, err: err}
			}
			var r io.Reader = cmd.InOrStdin()
			if from != "-" {
				f, err := os.Open(from)
				if err != nil {
					return fmt.Errorf("restore: %w", err)
				}
				defer f.Close()
				r = f
			}
			info, err := server.Restore(r, cfg, server.RestoreOptions{Force: force})
			if err != nil {
				return err
			}
			fp := ""
			if caCert := cfg.StatePaths().CACert; caCert != "" {
				if b, err := os.ReadFile(caCert); err == nil {
					if c, err := ca.ParseCertPEM(b); err == nil {
						fp = ", CA fingerprint " + ca.Fingerprint(c)
					}
				}
			}
			fmt.Fprintf(stdout, "restored %d files of the backup taken %s into %s%s\n",
				len(info.Files), info.CreatedAt.Format("2006-01-02 15:04:05 MST"), cfg.Server.DataDir, fp)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "archive to read, or - for standard input")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files (never while a server runs on them)")
	return cmd
}
