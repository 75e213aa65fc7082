package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/server/agentdist"
)

// newDistCmd is "vigocli dist": the offline tooling of agent distribution
// (make dist, make dist-sign-agent). It needs no server.
func newDistCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dist",
		Short: "Agent distribution: manifest, offline signing key, signatures (used by make dist)",
		Long: `Agent distribution tooling; it works on local files and never contacts a server.

The server serves the folder agent.dist_dir (default ./dist): binaries named
vigo-<os>-<arch>[.exe] and manifest.json (version, sha256, size and signature
of each). Envoys pin the signing key at registration (or at their first signed
update, fetching it from the server over mTLS) and, from then on, only accept
self-updates signed by it. A signature covers the build's version, OS, arch and
SHA-256 (schemas/agentbuild), so an old build or another platform's cannot be
passed off as the one announced, and agents refuse an older version unless the
operator allows it (vigocli envoys update --allow-downgrade).

  make dist                                   # cross-compile, then: vigocli dist manifest
  vigocli dist keygen --out agent-signing.key # once, on an offline machine
  make dist-sign-agent KEY=agent-signing.key  # vigocli dist sign --key ...`,
	}
	cmd.AddCommand(newDistManifestCmd(g), newDistKeygenCmd(g), newDistSignCmd(g), newDistVerifyCmd(g))
	return cmd
}

func newDistManifestCmd(g *globals) *cobra.Command {
	var dir, version string
	cmd := &cobra.Command{
		Use:   "manifest",
		Short: "Write DIR/manifest.json for the binaries in DIR",
		Long: `Write DIR/manifest.json for the binaries named vigo-<os>-<arch>[.exe] in DIR.

Each binary's version is read from its build information (-X ` + agentdist.VersionVar + `);
--version is used for binaries built without it. Signatures of binaries that did not
change are kept; changed binaries must be signed again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := agentdist.BuildManifest(dir, version)
			if err != nil {
				return err
			}
			if err := agentdist.WriteManifest(dir, m); err != nil {
				return err
			}
			return printBuilds(g, m)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "dist", "distribution folder")
	cmd.Flags().StringVar(&version, "version", "", "version of binaries that carry none")
	return cmd
}

func newDistKeygenCmd(g *globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Create the offline Ed25519 signing key (FILE) and its public key (FILE.pub)",
		Long: `Create the offline Ed25519 key that signs agent builds: the private key in FILE
(mode 0600, PKCS #8 PEM) and the public key in FILE.pub. Existing files are never
overwritten. Keep FILE offline: whoever holds it can push binaries to every envoy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := agentdist.WriteKeyPair(out, nil); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "wrote %s (private, keep it offline) and %s.pub\n", out, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "agent-signing.key", "private key file to create")
	return cmd
}

func newDistSignCmd(g *globals) *cobra.Command {
	var dir, key string
	cmd := &cobra.Command{
		Use:   "sign",
		Short: "Sign the version, platform and SHA-256 of every binary listed in DIR/manifest.json",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return &codeError{code: 2, err: fmt.Errorf("--key is required (the private key from vigocli dist keygen)")}
			}
			data, err := os.ReadFile(key)
			if err != nil {
				return fmt.Errorf("read signing key: %w", err)
			}
			priv, err := agentdist.ParsePrivateKey(data)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			m, err := agentdist.SignDir(dir, priv)
			if err != nil {
				return err
			}
			return printBuilds(g, m)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "dist", "distribution folder")
	cmd.Flags().StringVar(&key, "key", "", "private signing key file")
	return cmd
}

func newDistVerifyCmd(g *globals) *cobra.Command {
	var dir, pub string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that every binary matches DIR/manifest.json and its signature verifies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var pubPEM []byte
			if pub != "" {
				var err error
				if pubPEM, err = os.ReadFile(pub); err != nil {
					return fmt.Errorf("read public key: %w", err)
				}
			}
			m, err := agentdist.Verify(dir, pubPEM)
			if err != nil {
				return err
			}
			return printBuilds(g, m)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "dist", "distribution folder")
	cmd.Flags().StringVar(&pub, "pub", "", "public key to verify with (default: the manifest's signing_key)")
	return cmd
}

func printBuilds(g *globals, m *agentdist.Manifest) error {
	t := newTable(g.stdout, "OS/ARCH", "VERSION", "SIZE", "SHA256", "SIGNED", "FILE")
	for _, f := range m.Files {
		signed := "no"
		if f.Signature != "" {
			signed = "yes"
		}
		t.row(f.OS+"/"+f.Arch, f.Version, strconv.FormatInt(f.Size, 10), f.SHA256, signed, f.File)
	}
	return t.flush()
}
