package bootstrap

import (
	"crypto/x509"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

var goldenParams = Params{
	ServerURL:     "https://vigo.example.com:8443/",
	GRPCAddress:   "vigo.example.com:1530",
	CAFingerprint: "3f1c9a0e5b7d24c6a8e0f2b4d6c8a0e2f4b6d8c0a2e4f6b8d0c2a4e6f8b0d2c4",
}

func TestRenderGolden(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ os, golden string }{
		{"", "bootstrap.sh.golden"},
		{"windows", "bootstrap.ps1.golden"},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			t.Parallel()
			p := goldenParams
			p.OS = tt.os
			got, err := Render(p)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
			}
		})
	}
}

func TestRenderUnixFlavoursAreTheShScript(t *testing.T) {
	t.Parallel()
	want, err := Render(Params{ServerURL: "https://h:8443"})
	if err != nil {
		t.Fatal(err)
	}
	for _, goos := range []string{"linux", "darwin", "freebsd", "openbsd", "netbsd", "illumos"} {
		got, err := Render(Params{ServerURL: "https://h:8443", OS: goos})
		if err != nil || string(got) != string(want) {
			t.Errorf("Render(os=%s): %v, same script: %v", goos, err, string(got) == string(want))
		}
	}
	if _, err := Render(Params{ServerURL: "https://h:8443", OS: "plan9"}); !errors.Is(err, ErrUnsupportedOS) {
		t.Errorf("Render(os=plan9): %v, want ErrUnsupportedOS", err)
	}
}

func TestRenderRefusesUnsafeValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    Params
	}{
		{"empty server", Params{}},
		{"quote in host", Params{ServerURL: "https://vigo'; rm -rf /;'.example.com"}},
		{"dollar in host", Params{ServerURL: "https://$(reboot).example.com"}},
		{"backtick in host", Params{ServerURL: "https://`reboot`.example.com"}},
		{"newline", Params{ServerURL: "https://vigo.example.com\nreboot"}},
		{"path", Params{ServerURL: "https://vigo.example.com/x"}},
		{"query", Params{ServerURL: "https://vigo.example.com?x=1"}},
		{"user", Params{ServerURL: "https://u:p@vigo.example.com"}},
		{"scheme", Params{ServerURL: "javascript:alert(1)"}},
		{"no host", Params{ServerURL: "https://"}},
		{"bad port", Params{ServerURL: "https://vigo.example.com:84x3"}},
		{"unicode quote", Params{ServerURL: "https://vigo.example.com", CAFingerprint: "ab\u2019cd"}},
		{"fingerprint injection", Params{ServerURL: "https://vigo.example.com", CAFingerprint: "ab'; iex evil; '"}},
		{"grpc injection", Params{ServerURL: "https://vigo.example.com", GRPCAddress: "h:1530'; reboot; '"}},
		{"grpc no port", Params{ServerURL: "https://vigo.example.com", GRPCAddress: "vigo.example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, goos := range []string{"", "windows"} {
				tt.p.OS = goos
				if out, err := Render(tt.p); err == nil {
					t.Errorf("Render(os=%q) accepted %+v:\n%.300s", goos, tt.p, out)
				}
			}
		})
	}
}

func TestRenderNormalisesServerURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://vigo.example.com:8443/": "VIGO_SERVER='https://vigo.example.com:8443'",
		"https://[::1]:8443":             "VIGO_SERVER='https://[::1]:8443'",
		"http://127.0.0.1:8080":          "VIGO_SERVER='http://127.0.0.1:8080'",
	} {
		out, err := Render(Params{ServerURL: in})
		if err != nil {
			t.Errorf("Render(%q): %v", in, err)
			continue
		}
		if !strings.Contains(string(out), "\n"+want+"\n") {
			t.Errorf("Render(%q) lacks %s", in, want)
		}
	}
}

func TestQuote(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, sh, ps string
		bad        bool
	}{
		{in: "", sh: "''", ps: "''"},
		{in: "plain", sh: "'plain'", ps: "'plain'"},
		{in: "it's $HOME `x` $(y)", sh: `'it'\''s $HOME ` + "`x`" + ` $(y)'`, ps: `'it''s $HOME ` + "`x`" + ` $(y)'`},
		{in: "new\nline", bad: true},
		{in: "nul\x00", bad: true},
		{in: "smart \u2019 quote", bad: true},
	}
	for _, tt := range tests {
		sh, err1 := shQuote(tt.in)
		ps, err2 := psQuote(tt.in)
		if tt.bad {
			if err1 == nil || err2 == nil {
				t.Errorf("quote(%q) accepted", tt.in)
			}
			continue
		}
		if err1 != nil || err2 != nil || sh != tt.sh || ps != tt.ps {
			t.Errorf("quote(%q) = %s, %s (%v, %v); want %s, %s", tt.in, sh, ps, err1, err2, tt.sh, tt.ps)
		}
	}
}

// TestTemplatesAreASCII: Windows PowerShell 5.1 reads a script without a BOM
// in the ANSI code page, so any non-ASCII byte would be mangled.
func TestTemplatesAreASCII(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"templates/bootstrap.sh.tmpl", "templates/bootstrap.ps1.tmpl"} {
		b, err := templatesFS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range string(b) {
			if r > unicode.MaxASCII || (r < 0x20 && r != '\n' && r != '\t') {
				t.Errorf("%s: byte %d: %U is not printable ASCII", name, i, r)
				break
			}
		}
	}
}

func TestContentType(t *testing.T) {
	t.Parallel()
	if got := ContentType("windows"); got != "text/plain; charset=utf-8" {
		t.Errorf("windows: %s", got)
	}
	if got := ContentType(""); got != "text/x-shellscript; charset=utf-8" {
		t.Errorf("sh: %s", got)
	}
}

func TestShellcheck(t *testing.T) {
	t.Parallel()
	tool, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck is not installed (apt-get install shellcheck); CI installs it")
	}
	script, err := Render(goldenParams)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tool, "--shell=sh", "--severity=style", "-")
	cmd.Stdin = strings.NewReader(string(script))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// TestPowerShellTLS12BeforeFirstRequest: Windows PowerShell 5.1 on older
// hosts speaks TLS 1.0 by default, which the server refuses, so the 5.1
// one-liner of the README and of the script's own help, and the script
// itself, enable TLS 1.2 before their first request (issue 16, item 4).
func TestPowerShellTLS12BeforeFirstRequest(t *testing.T) {
	t.Parallel()
	script, err := Render(Params{ServerURL: "https://h:8443", OS: "windows"})
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// The 5.1 form is the one without -SkipCertificateCheck (a 7+ flag).
	oneLiner51 := func(text string) []string {
		var out []string
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, "/bootstrap?os=windows") && strings.Contains(l, "irm ") && !strings.Contains(l, "-SkipCertificateCheck") {
				out = append(out, l)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name, text string
	}{
		{name: "README.md", text: string(readme)},
		{name: "script help", text: string(script)},
	} {
		lines := oneLiner51(tc.text)
		if len(lines) == 0 {
			t.Errorf("%s shows no Windows PowerShell 5.1 one-liner (irm …/bootstrap?os=windows without -SkipCertificateCheck)", tc.name)
		}
		for _, l := range lines {
			tls := strings.Index(l, "SecurityProtocol")
			if tls < 0 || tls > strings.Index(l, "irm ") || !strings.Contains(l[tls:], "Tls12") {
				t.Errorf("%s: the 5.1 one-liner does not enable Tls12 before irm:\n%s", tc.name, l)
			}
		}
	}
	s := string(script)
	first := len(s)
	for _, call := range []string{"Invoke-WebRequest @", "Invoke-RestMethod @", "& $Bin"} {
		if i := strings.Index(s, call); i >= 0 && i < first {
			first = i
		}
	}
	if i := strings.Index(s, "[Net.ServicePointManager]::SecurityProtocol ="); i < 0 || i > first {
		t.Errorf("the script sets SecurityProtocol at offset %d, after its first request at %d", i, first)
	}
}

func TestOneLiner(t *testing.T) {
	const tok = "vt_abcdefghij.0123456789abcdefghijklmnopqrstuv"
	pin := strings.Repeat("Ab+/", 10) + "xyz="
	fp := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		p       OneLinerParams
		want    string
		wantErr string
	}{
		{
			name: "own CA: key and CA pinned",
			p:    OneLinerParams{ServerURL: "https://vigo.example.com:8443", Token: tok, CAFingerprint: fp, ServerKeyPin: pin},
			want: "export VIGO_TOKEN=" + tok + "; curl -sSfk --pinnedpubkey 'sha256//" + pin + "' https://vigo.example.com:8443/bootstrap" +
				" | sudo --preserve-env=VIGO_TOKEN sh -s -- --ca-fingerprint " + fp,
		},
		{
			name: "operator's certificate: curl verifies it, the CA is still pinned",
			p:    OneLinerParams{ServerURL: "https://vigo.example.com:8443/", Token: tok, CAFingerprint: fp},
			want: "export VIGO_TOKEN=" + tok + "; curl -sSf https://vigo.example.com:8443/bootstrap | sudo --preserve-env=VIGO_TOKEN sh -s -- --ca-fingerprint " + fp,
		},
		{
			name: "no fingerprint",
			p:    OneLinerParams{ServerURL: "https://vigo.example.com:8443", Token: tok},
			want: "export VIGO_TOKEN=" + tok + "; curl -sSf https://vigo.example.com:8443/bootstrap | sudo --preserve-env=VIGO_TOKEN sh -s --",
		},
		{
			name: "IPv6 address quoted (brackets are a glob)",
			p:    OneLinerParams{ServerURL: "https://[2001:db8::1]:8443", Token: tok},
			want: "export VIGO_TOKEN=" + tok + "; curl -sSf 'https://[2001:db8::1]:8443/bootstrap' | sudo --preserve-env=VIGO_TOKEN sh -s --",
		},
		{name: "token with shell characters", p: OneLinerParams{ServerURL: "https://h", Token: "vt_$(id)"}, wantErr: "token has characters"},
		{
			name: "no token: the line for hosts the policy admits without one",
			p:    OneLinerParams{ServerURL: "https://vigo.example.com:8443", CAFingerprint: fp, ServerKeyPin: pin},
			want: "curl -sSfk --pinnedpubkey 'sha256//" + pin + "' https://vigo.example.com:8443/bootstrap | sudo sh -s -- --ca-fingerprint " + fp,
		},
		{name: "bad pin", p: OneLinerParams{ServerURL: "https://h", Token: tok, CAFingerprint: fp, ServerKeyPin: "x';id;'"}, wantErr: "pin must be"},
		{name: "bad fingerprint", p: OneLinerParams{ServerURL: "https://h", Token: tok, CAFingerprint: "zz;id", ServerKeyPin: pin}, wantErr: "fingerprint must be hex"},
		{name: "bad server", p: OneLinerParams{ServerURL: "https://h/x?y", Token: tok}, wantErr: "must be https://host[:port]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OneLiner(tt.p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("OneLiner: %q, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("OneLiner (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServerKeyPin(t *testing.T) {
	// The pin of a fixed SubjectPublicKeyInfo, as
	// openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64 computes it.
	cert := &x509.Certificate{RawSubjectPublicKeyInfo: []byte("spki")}
	if got, want := ServerKeyPin(cert), "b+7MjBbFVR2f6z61934tp3O/aL2e+cUpJ86yyG5WiSs="; got != want {
		t.Errorf("ServerKeyPin = %s, want %s", got, want)
	}
}
