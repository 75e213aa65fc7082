package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/vigo-enroll/vigo/schemas/atomicfile"
)

// The client configuration: named contexts (a server, its CA, an admin
// token), like kubeconfig's, written by vigocli login to
// $XDG_CONFIG_HOME/vigo/config.yaml (VIGO_CONFIG names another file). The
// CA and the token of a context live beside it, in a folder named after
// the context, readable by the user only.
//
// What a command talks to is decided per setting, first found wins: the
// flag (--server, --ca-file, --admin-token-file, --admin-token), the
// environment (VIGO_SERVER, VIGO_CA_FILE, VIGO_ADMIN_TOKEN,
// VIGO_ADMIN_TOKEN_FILE), the context (--context, else the current one),
// the server host's defaults (https://localhost:8443, ./vigo-data/tls/ca,
// ./vigo-data/admin.token). A context's CA and token are only used for
// its own server: a --server naming another server never receives them.

// clientConfig is the configuration file.
type clientConfig struct {
	CurrentContext string          `yaml:"current-context"`
	Contexts       []clientContext `yaml:"contexts"`
}

// clientContext is a server and how to reach it as an admin.
type clientContext struct {
	Name   string `yaml:"name" json:"name"`
	Server string `yaml:"server" json:"server"`
	// CAFile is the server's CA, pinned by login (empty: the system's roots).
	CAFile         string `yaml:"ca-file,omitempty" json:"ca_file,omitempty"`
	AdminTokenFile string `yaml:"admin-token-file" json:"admin_token_file"`
}

// contextName is what a context may be called (it names a folder).
var contextName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// configPath is the configuration file: VIGO_CONFIG, or
// $XDG_CONFIG_HOME/vigo/config.yaml (~/.config/vigo/config.yaml).
func configPath() (string, error) {
	if p := os.Getenv("VIGO_CONFIG"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the configuration folder: %w (set VIGO_CONFIG)", err)
	}
	return filepath.Join(dir, "vigo", "config.yaml"), nil
}

// loadConfig reads the configuration file; a missing file is an empty
// configuration.
func loadConfig() (*clientConfig, string, error) {
	path, err := configPath()
	if err != nil {
		return nil, "", err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &clientConfig{}, path, nil
	}
	if err != nil {
		return nil, path, fmt.Errorf("read %s: %w", path, err)
	}
	var c clientConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, path, fmt.Errorf("read %s: %w", path, err)
	}
	return &c, path, nil
}

func (c *clientConfig) find(name string) *clientContext {
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i]
		}
	}
	return nil
}

func (c *clientConfig) names() string {
	var ns []string
	for _, x := range c.Contexts {
		ns = append(ns, x.Name)
	}
	if len(ns) == 0 {
		return "none: vigocli login makes one"
	}
	return strings.Join(ns, ", ")
}

// save writes the configuration atomically, readable by the user only.
func (c *clientConfig) save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.WriteString("# vigocli contexts: written by vigocli login and vigocli config use-context\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return atomicfile.Write(path, buf.Bytes(), 0o600)
}

// normalizeServer makes host:port an https URL.
func normalizeServer(s string) string {
	if s != "" && !strings.Contains(s, "://") {
		return "https://" + s
	}
	return strings.TrimSuffix(s, "/")
}

// target is what a command talks to, resolved from flags, environment,
// context and defaults.
type target struct {
	server    string
	caFile    string // "" = the system's roots
	token     string
	tokenFrom string // where the token came from, for messages
	context   string // the context used, if any
}

// resolve decides the server, CA and admin token (see the package
// comment of the client configuration above for the order).
func (g *globals) resolve(needToken bool) (target, error) {
	var t target
	switch {
	case g.server != "":
		t.server = normalizeServer(g.server)
	case os.Getenv("VIGO_SERVER") != "":
		t.server = normalizeServer(os.Getenv("VIGO_SERVER"))
	}
	var ctx *clientContext
	if !g.noContext {
		cfg, path, err := loadConfig()
		switch {
		case err != nil && path == "" && g.contextName == "":
			cfg = &clientConfig{} // no home folder: no contexts
		case err != nil:
			return t, &codeError{code: 2, err: err}
		}
		name := g.contextName
		if name == "" {
			name = cfg.CurrentContext
		}
		if name != "" {
			ctx = cfg.find(name)
			if ctx == nil {
				return t, &codeError{code: 2, err: fmt.Errorf("no context %q in %s (contexts: %s)", name, path, cfg.names())}
			}
			if t.server != "" && t.server != normalizeServer(ctx.Server) {
				if g.contextName != "" {
					return t, &codeError{code: 2, err: fmt.Errorf("--context %s is for %s, not %s", name, ctx.Server, t.server)}
				}
				ctx = nil // another server: never its CA or token
			}
		}
	}
	if t.server == "" && ctx != nil {
		t.server = normalizeServer(ctx.Server)
	}
	if t.server == "" {
		t.server = "https://localhost:8443"
	}
	if ctx != nil {
		t.context = ctx.Name
	}

	switch {
	case g.caFile != "":
		t.caFile = g.caFile
	case os.Getenv("VIGO_CA_FILE") != "":
		t.caFile = os.Getenv("VIGO_CA_FILE")
	case ctx != nil:
		t.caFile = ctx.CAFile
	default:
		if _, err := os.Stat("vigo-data/tls/ca"); err == nil {
			t.caFile = "vigo-data/tls/ca"
		}
	}

	file, optional := "", false
	switch {
	case g.adminToken != "":
		t.token, t.tokenFrom = g.adminToken, "--admin-token"
	case g.adminTokenFile != "":
		file = g.adminTokenFile
	case os.Getenv("VIGO_ADMIN_TOKEN") != "":
		t.token, t.tokenFrom = os.Getenv("VIGO_ADMIN_TOKEN"), "VIGO_ADMIN_TOKEN"
	case os.Getenv("VIGO_ADMIN_TOKEN_FILE") != "":
		file = os.Getenv("VIGO_ADMIN_TOKEN_FILE")
	case ctx != nil:
		file = ctx.AdminTokenFile
	default:
		file, optional = "vigo-data/admin.token", true
	}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil && !optional {
			return t, &codeError{code: 2, err: fmt.Errorf("read admin token: %w", err)}
		}
		t.token, t.tokenFrom = strings.TrimSpace(string(data)), file
	}
	if needToken && t.token == "" {
		return t, &codeError{code: 2, err: errors.New("no admin token: run vigocli login (see 'vigocli login --help'), or pass --admin-token-file FILE (the server writes DATA/admin.token at first start) or set VIGO_ADMIN_TOKEN")}
	}
	return t, nil
}

func newLoginCmd(g *globals) *cobra.Command {
	var fingerprint, tokenFile string
	cmd := &cobra.Command{
		Use:   "login [--server URL] [--ca-fingerprint SHA256] [--token-file FILE] [--context NAME]",
		Short: "Save a server, its CA and an admin token as a named context: later commands need no flags",
		Long: `Login checks that it can reach the server as an admin, then saves a context: the server's
URL, its CA (pinned) and the admin token, in $XDG_CONFIG_HOME/vigo/config.yaml
(~/.config/vigo/config.yaml; VIGO_CONFIG names another file), readable by you only. The
context becomes the current one: vigocli envoys list then needs no flag.

The CA is pinned by its fingerprint: --ca-fingerprint is the SHA-256 that vigosrv prints at
start (ca_fingerprint in its log; also in the one-liner of vigocli tokens generate). Login
fetches the certificate chain the server presents, finds the CA with that fingerprint,
checks that the server's certificate is signed by it, and saves it. --ca-file gives the CA
instead (vigo-data/tls/ca of the server).

--token-file is a file holding an admin token (vigo-data/admin.token of the server, or one
made by vigocli admin-tokens create); it is copied into the context.

On the server's own host, in the folder holding vigo-data, login needs no flag: it uses
https://localhost:8443, vigo-data/tls/ca and vigo-data/admin.token.

--server host:port means https://host:port. The context is named --context, else after the
server's host name. Logging in again with the same name replaces the context.`,
		Example: `  vigocli login --server vigo.example.com:8443 --ca-fingerprint 3f9a…e1 --token-file ./alice.token
  vigocli login                        # on the server's host, beside vigo-data
  vigocli login --server vigo-stage.example.com:8443 --ca-fingerprint 77c0…9b --token-file stage.token --context stage`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			usage := func(err error) error { return &codeError{code: 2, err: err} }
			if tokenFile != "" {
				g.adminTokenFile = tokenFile
			}
			g.noContext = true // login starts from what it is given
			t, err := g.resolve(true)
			if err != nil {
				return err
			}
			u, err := url.Parse(t.server)
			if err != nil || u.Scheme != "https" || u.Host == "" {
				return usage(fmt.Errorf("--server %q must be an https:// URL or host:port", t.server))
			}
			name := g.contextName
			if name == "" {
				name = u.Hostname()
			}
			if !contextName.MatchString(name) {
				return usage(fmt.Errorf("--context %q: 1 to 63 letters, digits, '.', '_' or '-'", name))
			}
			var caPEM []byte
			switch {
			case fingerprint != "":
				pin, err := parseSHA256(fingerprint)
				if err != nil {
					return usage(err)
				}
				ca, err := fetchPinnedCA(cmd.Context(), u, pin)
				if err != nil {
					return err
				}
				caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
			case t.caFile != "":
				caPEM, err = os.ReadFile(t.caFile)
				if err != nil {
					return usage(fmt.Errorf("read CA file: %w", err))
				}
				if b, _ := pem.Decode(caPEM); b == nil || b.Type != "CERTIFICATE" {
					return usage(fmt.Errorf("CA file %s holds no PEM certificate", t.caFile))
				}
			case g.insecure:
				return usage(errors.New("login never saves --insecure: pass --ca-fingerprint (printed by vigosrv at start) to pin the server's CA"))
			default:
				return usage(errors.New("how to trust the server? pass --ca-fingerprint SHA256 (printed by vigosrv at start as ca_fingerprint) or --ca-file FILE"))
			}

			cfg, path, err := loadConfig()
			if err != nil {
				return usage(err)
			}
			// Check before saving anything: the CA authenticates the server
			// and the token is accepted (the first admin request). The CA
			// (no secret) waits in a temporary file meanwhile.
			tmp, err := os.CreateTemp("", "vigocli-login-ca-*.pem")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if _, err := tmp.Write(caPEM); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			g.server, g.caFile, g.adminToken, g.adminTokenFile = t.server, tmp.Name(), t.token, ""
			c, err := g.client()
			if err != nil {
				return err
			}
			var v struct {
				Version string `json:"version"`
			}
			if err := c.do(cmd.Context(), "GET", "/api/v1/version", nil, &v); err != nil {
				return fmt.Errorf("login to %s: %w", t.server, err)
			}
			dir := filepath.Join(filepath.Dir(path), name)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			caFile, tokFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "admin.token")
			if err := atomicfile.Write(caFile, caPEM, 0o600); err != nil {
				return err
			}
			if err := atomicfile.Write(tokFile, []byte(t.token+"\n"), 0o600); err != nil {
				return err
			}
			ctx := clientContext{Name: name, Server: t.server, CAFile: caFile, AdminTokenFile: tokFile}
			if old := cfg.find(name); old != nil {
				*old = ctx
			} else {
				cfg.Contexts = append(cfg.Contexts, ctx)
			}
			cfg.CurrentContext = name
			if err := cfg.save(path); err != nil {
				return fmt.Errorf("save %s: %w", path, err)
			}
			block, _ := pem.Decode(caPEM)
			sum := sha256.Sum256(block.Bytes)
			fmt.Fprintf(g.stdout, "logged in to %s (server %s, CA %s): context %q saved in %s and made current\n",
				t.server, dash(v.Version), hex.EncodeToString(sum[:]), name, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&fingerprint, "ca-fingerprint", "", "SHA-256 of the server's CA certificate (hex, as vigosrv prints it)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the admin token (default: --admin-token-file, VIGO_ADMIN_TOKEN(_FILE) or ./vigo-data/admin.token)")
	return cmd
}

func parseSHA256(s string) ([]byte, error) {
	s = strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(s))
	s = strings.TrimPrefix(s, "sha256")
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New("--ca-fingerprint must be the 64 hex digits of a SHA-256")
	}
	return b, nil
}

// fetchPinnedCA connects to the server and returns the certificate of the
// chain it presents whose SHA-256 is pin, once the server's certificate
// is checked to be signed by it for the server's name. Nothing is sent
// before that check.
func fetchPinnedCA(ctx context.Context, u *url.URL, pin []byte) (*x509.Certificate, error) {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	var found *x509.Certificate
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: u.Hostname(),
		// Verified by hand below, against the pinned CA only.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			for _, c := range cs.PeerCertificates {
				sum := sha256.Sum256(c.Raw)
				if !bytes.Equal(sum[:], pin) {
					continue
				}
				roots := x509.NewCertPool()
				roots.AddCert(c)
				if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: u.Hostname(), Roots: roots, Intermediates: inter}); err != nil {
					return fmt.Errorf("the server's certificate does not verify against the CA of that fingerprint: %w", err)
				}
				found = c
				return nil
			}
			return errors.New("no certificate of the chain the server presents has that fingerprint: check --ca-fingerprint (vigosrv prints it at start), or pass --ca-file when the server presents an operator's certificate")
		},
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 30 * time.Second}, Config: conf}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("login to %s: %w", u.Host, err)
	}
	conn.Close()
	return found, nil
}

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and choose the contexts saved by vigocli login",
		Long: `The contexts saved by vigocli login live in $XDG_CONFIG_HOME/vigo/config.yaml
(~/.config/vigo/config.yaml; VIGO_CONFIG names another file). The current context is used
by every command; --context NAME uses another for one command.`,
	}
	getContexts := &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts; * marks the current one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := loadConfig()
			if err != nil {
				return err
			}
			if g.structured() {
				return g.printData(struct {
					CurrentContext string          `json:"current_context"`
					Contexts       []clientContext `json:"contexts"`
				}{cfg.CurrentContext, append([]clientContext{}, cfg.Contexts...)})
			}
			t := newTable(g.stdout, "CURRENT", "NAME", "SERVER", "CA FILE", "ADMIN TOKEN FILE")
			for _, c := range cfg.Contexts {
				cur := ""
				if c.Name == cfg.CurrentContext {
					cur = "*"
				}
				t.row(cur, c.Name, c.Server, dash(c.CAFile), c.AdminTokenFile)
			}
			return t.flush()
		},
	}
	current := &cobra.Command{
		Use:   "current-context",
		Short: "Print the name of the current context (exit 1 when there is none)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, path, err := loadConfig()
			if err != nil {
				return err
			}
			if cfg.CurrentContext == "" {
				return &codeError{code: 1, err: fmt.Errorf("no current context in %s: vigocli login makes one", path)}
			}
			fmt.Fprintln(g.stdout, cfg.CurrentContext)
			return nil
		},
	}
	use := &cobra.Command{
		Use:     "use-context NAME",
		Short:   "Make a context the current one",
		Example: "  vigocli config use-context stage",
		Args:    exactArgs(1, "the name of a context"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := loadConfig()
			if err != nil {
				return err
			}
			if cfg.find(args[0]) == nil {
				return &codeError{code: 1, err: fmt.Errorf("no context %q in %s (contexts: %s)", args[0], path, cfg.names())}
			}
			cfg.CurrentContext = args[0]
			if err := cfg.save(path); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "switched to context %q\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(printsData(getContexts), current, use)
	return cmd
}
