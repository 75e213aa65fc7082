// Package bootstrap renders the one-line bootstrap scripts served at
// GET /bootstrap: a POSIX sh script for Linux, macOS, the BSDs and illumos
// (runs under dash, busybox sh, bash, ksh), and a PowerShell script for
// Windows (?os=windows; PowerShell 5.1 and 7+).
//
// The scripts are embedded templates; Render fills in the server's address,
// gRPC address and CA fingerprint. Every value is validated against a strict
// character set and then quoted for the target language, so no value can
// break out of its string.
//
// What the scripts do, and their options, is written at the top of each
// template (templates/bootstrap.sh.tmpl, templates/bootstrap.ps1.tmpl). With
// --prefix DIR the sh script installs the agent at DIR/usr/local/bin/vigo and
// its configuration at DIR/etc/vigo-envoy, and calls
//
//	vigo register --config-dir DIR/etc/vigo-envoy --server URL --force [--token T] [--hostname H] [--ca-fingerprint F]
//	vigo service install|start|uninstall --binary BIN --config-dir DIR/etc/vigo-envoy
package bootstrap

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"text/template"
)

//go:embed templates/bootstrap.sh.tmpl templates/bootstrap.ps1.tmpl
var templatesFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"sh": shQuote,
	"ps": psQuote,
}).Option("missingkey=error").ParseFS(templatesFS, "templates/*.tmpl"))

// ErrUnsupportedOS is returned by Render for an os query value it has no script for.
var ErrUnsupportedOS = errors.New("no bootstrap script for this operating system")

// Params are the values rendered into a script.
type Params struct {
	// ServerURL is the server's advertised HTTPS base URL, e.g.
	// https://vigo.example.com:8443 (required). A path, query or user is refused.
	ServerURL string
	// GRPCAddress is the advertised check-in address, host:port (optional;
	// informational in the script: registration returns the one to use).
	GRPCAddress string
	// CAFingerprint is the hex SHA-256 of the CA certificate (optional),
	// passed to "vigo register --ca-fingerprint" unless the user gives one.
	CAFingerprint string
	// OS selects the script: "windows" is PowerShell; "" and the Unix
	// systems (linux, darwin, freebsd, openbsd, netbsd, illumos) are sh.
	OS string
	// VerifyTLS makes the script verify the server's certificate on its
	// own downloads (the server presents an operator's certificate, meant
	// to be trusted by hosts); --insecure (-Insecure) still skips it.
	// False: the downloads skip the check like the one-liner's curl -k.
	VerifyTLS bool
}

var (
	hostRe        = regexp.MustCompile(`^[A-Za-z0-9._-]+$|^\[[0-9A-Fa-f:.]+\]$`)
	grpcRe        = regexp.MustCompile(`^[A-Za-z0-9.:\[\]_-]+$`)
	fingerprintRe = regexp.MustCompile(`^[A-Fa-f0-9:]{1,128}$`)
)

func (p Params) normalise() (Params, error) {
	u, err := url.Parse(p.ServerURL)
	if err != nil {
		return p, errors.New("render bootstrap: server URL does not parse")
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") || u.Opaque != "" {
		return p, fmt.Errorf("render bootstrap: server URL %q must be https://host[:port]", p.ServerURL)
	}
	host := u.Hostname()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if !hostRe.MatchString(host) {
		return p, fmt.Errorf("render bootstrap: server host %q has characters a host name never has", u.Hostname())
	}
	if port := u.Port(); port != "" && !regexp.MustCompile(`^[0-9]{1,5}$`).MatchString(port) {
		return p, fmt.Errorf("render bootstrap: server port %q is invalid", port)
	}
	p.ServerURL = u.Scheme + "://" + u.Host
	if p.GRPCAddress != "" {
		if _, _, err := net.SplitHostPort(p.GRPCAddress); err != nil || !grpcRe.MatchString(p.GRPCAddress) {
			return p, fmt.Errorf("render bootstrap: gRPC address %q must be host:port", p.GRPCAddress)
		}
	}
	if p.CAFingerprint != "" && !fingerprintRe.MatchString(p.CAFingerprint) {
		return p, errors.New("render bootstrap: CA fingerprint must be hex")
	}
	return p, nil
}

// Render returns the bootstrap script for p.OS.
func Render(p Params) ([]byte, error) {
	name := "bootstrap.sh.tmpl"
	switch p.OS {
	case "windows":
		name = "bootstrap.ps1.tmpl"
	case "", "linux", "darwin", "freebsd", "openbsd", "netbsd", "illumos":
	default:
		return nil, fmt.Errorf("render bootstrap for %q: %w", p.OS, ErrUnsupportedOS)
	}
	p, err := p.normalise()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, p); err != nil {
		return nil, fmt.Errorf("render bootstrap: %w", err)
	}
	return b.Bytes(), nil
}

// OneLinerParams are the values of the one-liner printed with a new token
// (vigocli tokens generate).
type OneLinerParams struct {
	// ServerURL is the server's advertised HTTPS base URL (required).
	ServerURL string
	// Token is the enrollment token (required).
	Token string
	// CAFingerprint is the hex SHA-256 of Vigo's CA certificate, for
	// vigo register --ca-fingerprint (optional).
	CAFingerprint string
	// ServerKeyPin is set when the server's HTTPS certificate is issued by
	// Vigo's own CA, which no client trusts: the base64 SHA-256 of the
	// certificate's public key, for curl -k --pinnedpubkey. Without it
	// curl verifies the certificate as usual.
	ServerKeyPin string
}

var (
	tokenRe = regexp.MustCompile(`^vt_[A-Za-z0-9._-]+$`)
	pinRe   = regexp.MustCompile(`^[A-Za-z0-9+/]{43}=$`)
)

// OneLiner returns the Unix one-liner that enrolls a host with a token:
//
//	export VIGO_TOKEN=vt_…; curl -sSfk --pinnedpubkey 'sha256//PIN' URL/bootstrap | sudo --preserve-env=VIGO_TOKEN sh -s -- --ca-fingerprint F
//
// The token is in no process's arguments, where ps would show it to every
// local user: export is a shell builtin, sudo passes the variable on
// (--preserve-env; "sudo VIGO_TOKEN=… sh" would put it in sudo's own
// arguments), and the script hands it to vigo in the environment.
//
// With a server certificate from Vigo's own CA, curl -k cannot check the
// certificate chain, so the script itself would be unauthenticated and a
// fingerprint inside it worth nothing: --pinnedpubkey makes curl refuse
// any server but the one whose key the operator's terminal printed (curl
// checks the pin even with -k), and --ca-fingerprint on the command line,
// not in the fetched script, makes vigo register pin the CA. With an
// operator's certificate curl verifies it (no -k, no key pin); the CA
// fingerprint still pins Vigo's CA for registration. Options may be
// appended (--hostname H, --no-service). Without a token it is the line for
// hosts the policy admits without one (trusted or approved): the same pins,
// no VIGO_TOKEN.
func OneLiner(p OneLinerParams) (string, error) {
	n, err := Params{ServerURL: p.ServerURL, CAFingerprint: p.CAFingerprint}.normalise()
	if err != nil {
		return "", err
	}
	if p.Token != "" && !tokenRe.MatchString(p.Token) {
		return "", errors.New("render one-liner: token has characters a token never has")
	}
	// normalise allows only letters, digits, ".-_:/" and the brackets of
	// an IPv6 address, which sh would take for a glob: quoted then.
	url := n.ServerURL + "/bootstrap"
	if strings.ContainsAny(url, "[]") {
		if url, err = shQuote(url); err != nil {
			return "", err
		}
	}
	curl := "curl -sSf " + url
	if p.ServerKeyPin != "" {
		if !pinRe.MatchString(p.ServerKeyPin) {
			return "", errors.New("render one-liner: server key pin must be a base64 SHA-256")
		}
		curl = "curl -sSfk --pinnedpubkey 'sha256//" + p.ServerKeyPin + "' " + url
	}
	line := curl + " | sudo sh -s --"
	if p.Token != "" {
		line = "export VIGO_TOKEN=" + p.Token + "; " + curl + " | sudo --preserve-env=VIGO_TOKEN sh -s --"
	}
	if n.CAFingerprint != "" {
		line += " --ca-fingerprint " + n.CAFingerprint
	}
	return line, nil
}

// ServerKeyPin returns what curl --pinnedpubkey sha256// compares: the
// base64 SHA-256 of the certificate's SubjectPublicKeyInfo.
func ServerKeyPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// ContentType returns the Content-Type header for the script of os: plain
// text for PowerShell, so that Invoke-RestMethod returns a string for iex.
func ContentType(os string) string {
	if os == "windows" {
		return "text/plain; charset=utf-8"
	}
	return "text/x-shellscript; charset=utf-8"
}

// shQuote quotes s for POSIX sh: single quotes, each embedded quote written
// as close quote, backslash quote, open quote.
// Render only passes validated values, and refuses what cannot be quoted:
// quoteSafe is checked again here as a last line of defence.
func shQuote(s string) (string, error) {
	if err := quoteSafe(s); err != nil {
		return "", err
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'", nil
}

// psQuote quotes s for PowerShell: single quotes (no expansion), with '
// doubled. Non-ASCII is refused in quoteSafe, because PowerShell also
// treats the typographic quotes U+2018..U+201B as single quotes.
func psQuote(s string) (string, error) {
	if err := quoteSafe(s); err != nil {
		return "", err
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'", nil
}

func quoteSafe(s string) error {
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			return fmt.Errorf("value holds a character that cannot be quoted safely (%U)", r)
		}
	}
	return nil
}
