package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/buildinfo"
)

// globals are the flags every command shares, and the command's writers.
type globals struct {
	stdout, stderr io.Writer
	// stdin answers questions; terminal reports whether it is a terminal
	// (nil: whether os.Stdin is one). Nothing is asked of a non-terminal.
	stdin    io.Reader
	terminal func() bool

	server         string
	caFile         string
	insecure       bool
	adminToken     string
	adminTokenFile string
	output         string
	contextName    string
	// noContext ignores the saved contexts (vigocli login).
	noContext bool

	// clock is the time ages are counted from (time.Now when nil).
	clock func() time.Time

	// build is this program's build (buildinfo.Get() when zero), compared
	// with the server's; buildWarned is set once the difference was told.
	build       buildinfo.Info
	buildWarned bool
}

// exitCoder is implemented by errors that carry a process exit code.
type exitCoder interface{ ExitCode() int }

// codeError is an error with an exit code; an empty message prints nothing
// (the command already explained itself).
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}
func (e *codeError) Unwrap() error { return e.err }
func (e *codeError) ExitCode() int { return e.code }

// Main runs vigocli with os.Args and returns the exit code.
func Main() int {
	g := &globals{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}
	// Ctrl-C ends a command that follows (audit --follow, policy status
	// --watch) as its normal end.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, g, os.Args[1:])
}

func run(g *globals, args []string) int { return runContext(context.Background(), g, args) }

func runContext(ctx context.Context, g *globals, args []string) int {
	// Every byte printed goes through escapeControls (see termsafe.go).
	stdout, stderr := &safeWriter{w: g.stdout}, &safeWriter{w: g.stderr}
	g.stdout, g.stderr = stdout, stderr
	defer stderr.Flush()
	defer stdout.Flush()
	root := newRootCmd(g)
	root.SetArgs(args)
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := 1
	var ec exitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(g.stderr, "vigocli: "+msg)
	}
	return code
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "vigocli",
		Short: "Administer a Vigo Enroll server: tokens, envoys, audit and enrollment policy",
		Long: `vigocli administers a Vigo Enroll server.

Log in once, and every command knows the server, its CA and your admin token:

  vigocli login --server vigo.example.com:8443 --ca-fingerprint SHA256 --token-file FILE

(vigocli login --help tells more; vigocli config get-contexts lists the saved contexts.)
Each setting is taken from, first found: the flag (--server, --ca-file, --admin-token-file,
--admin-token), the environment (VIGO_SERVER, VIGO_CA_FILE, VIGO_ADMIN_TOKEN_FILE,
VIGO_ADMIN_TOKEN), the context (--context NAME, else the current one; VIGO_CONFIG names the
file), and on the server's host ./vigo-data/tls/ca, ./vigo-data/admin.token and
https://localhost:8443.

Output: every command that prints data takes -o table (default; ages such as "3m ago"),
-o wide (more columns), -o json or -o yaml (times in RFC 3339 with their zone). Errors go
to stderr. Exit status: 0 success, 1 a failed check or operation, 2 a usage error.

Examples:
  vigocli tokens generate --pattern web1.example.com --ttl 2h
  vigocli envoys list -o wide
  vigocli policy vet examples/policy
  vigocli policy status`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", "", "server URL, or host:port for https (env VIGO_SERVER; default: the context's, else https://localhost:8443)")
	pf.StringVar(&g.caFile, "ca-file", "", "CA certificate that signed the server's certificate (env VIGO_CA_FILE; default: the context's, else ./vigo-data/tls/ca when readable)")
	pf.BoolVar(&g.insecure, "insecure", false, "do not verify the server's certificate")
	pf.StringVar(&g.adminToken, "admin-token", "", "admin token (env VIGO_ADMIN_TOKEN; prefer --admin-token-file)")
	pf.StringVar(&g.adminTokenFile, "admin-token-file", "", "file holding the admin token (env VIGO_ADMIN_TOKEN_FILE; default: the context's, else ./vigo-data/admin.token when readable)")
	pf.StringVar(&g.contextName, "context", "", "use this context of vigocli login instead of the current one")
	pf.StringVarP(&g.output, "output", "o", "table", "output format of the commands that print data: table, wide, json or yaml")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &codeError{code: 2, err: fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return g.checkOutput(cmd) }
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp))
	root.AddCommand(newTokensCmd(g), newEnvoysCmd(g), newAuditCmd(g), newPolicyCmd(g), newDistCmd(g))
	root.AddCommand(newApprovedCmd(g), newTrustedCmd(g), newVersionCmd(g), newAdminTokensCmd(g))
	root.AddCommand(newLoginCmd(g), newConfigCmd(g))
	root.SetHelpCommand(newHelpCmd())
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	enforceUsage(root)
	return root
}

// client is an authenticated API client.
type client struct {
	g    *globals
	http *http.Client
	tok  string
}

func (g *globals) client() (*client, error) {
	t, err := g.resolve(true)
	if err != nil {
		return nil, err
	}
	g.server = t.server
	// Every request carries the admin token: never over plain HTTP, where
	// anyone on the path reads it (and never to a URL whose scheme would
	// make net/http guess).
	if u, err := url.Parse(g.server); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, &codeError{code: 2, err: fmt.Errorf("--server %q must be an https:// URL or host:port: vigocli sends the admin token with every request and never over plain http", g.server)}
	}
	tok := t.token
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case g.insecure:
		tlsCfg.InsecureSkipVerify = true // the operator asked for it
	default:
		caFile := t.caFile
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return nil, &codeError{code: 2, err: fmt.Errorf("read CA file: %w", err)}
			}
			// Vigo's CA, and the system's roots for a server whose HTTPS
			// listener presents an operator's certificate.
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, &codeError{code: 2, err: fmt.Errorf("CA file %s holds no PEM certificate", caFile)}
			}
			tlsCfg.RootCAs = pool
		}
	}
	return &client{g: g, tok: tok, http: &http.Client{
		Timeout:   2 * time.Minute,
		Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment},
	}}, nil
}

// do sends a request and decodes a JSON answer into out. A non-2xx answer
// becomes an error worded as the server worded it.
func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.g.server, "/")+path, body)
	if err != nil {
		return &codeError{code: 2, err: fmt.Errorf("--server %s: %w", c.g.server, err)}
	}
	req.Header.Set("Authorization", "Bearer "+c.tok)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var uerr x509.UnknownAuthorityError
		if errors.As(err, &uerr) {
			return fmt.Errorf("%s: the server's certificate is not signed by a known CA: run vigocli login --ca-fingerprint SHA256 (printed by vigosrv at start; after a CA rotation, vigosrv ca status shows the new one), or pass --ca-file vigo-data/tls/ca (from the server) or --insecure", c.g.server)
		}
		return fmt.Errorf("cannot reach %s: %w", c.g.server, err)
	}
	defer resp.Body.Close()
	c.g.checkBuild(resp.Header)
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e apiv1.Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &httpError{code: resp.StatusCode, msg: fmt.Sprintf("server: %s (HTTP %d)", oneLine(e.Error), resp.StatusCode)}
		}
		body := strings.TrimSpace(string(data))
		if len(body) > 512 {
			body = body[:512] + "…"
		}
		return &httpError{code: resp.StatusCode, msg: fmt.Sprintf("server answered HTTP %d: %s", resp.StatusCode, oneLine(body))}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// httpError is a non-2xx answer of the server, worded as the server
// worded it.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
