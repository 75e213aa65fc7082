package agentbuild

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var digest = strings.Repeat("ab", 32)

func TestStatementBytes(t *testing.T) {
	got, err := Statement(Build{Version: "v1.2.3", OS: "linux", Arch: "amd64", SHA256: strings.ToUpper(digest)})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("vigo-agent-build-v1\n" +
		"\x00\x00\x00\x06v1.2.3" +
		"\x00\x00\x00\x05linux" +
		"\x00\x00\x00\x05amd64")
	d, _ := hex.DecodeString(digest)
	want = append(want, d...)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("statement (-want +got):\n%s", diff)
	}
	if _, err := Statement(Build{SHA256: "abc"}); err == nil {
		t.Error("a short digest made a statement")
	}
}

func TestVerifyBindsEveryField(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	b := Build{Version: "v1.2.3", OS: "linux", Arch: "amd64", SHA256: digest}
	sig, err := Sign(priv, b)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := hex.DecodeString(digest)
	digestOnly := ed25519.Sign(priv, d) // the signature before issue 12
	tests := []struct {
		name string
		pub  ed25519.PublicKey
		b    Build
		sig  string
		want bool
	}{
		{name: "as signed", pub: pub, b: b, sig: sig, want: true},
		{name: "upper-case digest is the same build", pub: pub, b: Build{Version: "v1.2.3", OS: "linux", Arch: "amd64", SHA256: strings.ToUpper(digest)}, sig: sig, want: true},
		{name: "older version", pub: pub, b: Build{Version: "v1.2.2", OS: "linux", Arch: "amd64", SHA256: digest}, sig: sig},
		{name: "other OS", pub: pub, b: Build{Version: "v1.2.3", OS: "darwin", Arch: "amd64", SHA256: digest}, sig: sig},
		{name: "other arch", pub: pub, b: Build{Version: "v1.2.3", OS: "linux", Arch: "arm64", SHA256: digest}, sig: sig},
		{name: "other digest", pub: pub, b: Build{Version: "v1.2.3", OS: "linux", Arch: "amd64", SHA256: strings.Repeat("cd", 32)}, sig: sig},
		{name: "field boundary moved", pub: pub, b: Build{Version: "v1.2.3l", OS: "inux", Arch: "amd64", SHA256: digest}, sig: sig},
		{name: "other key", pub: other, b: b, sig: sig},
		{name: "signature over the digest only", pub: pub, b: b, sig: b64(digestOnly)},
		{name: "not base64", pub: pub, b: b, sig: "!!"},
		{name: "short signature", pub: pub, b: b, sig: sig[:20]},
		{name: "bad digest", pub: pub, b: Build{Version: "v1.2.3", OS: "linux", Arch: "amd64", SHA256: "zz"}, sig: sig},
		{name: "short key", pub: pub[:10], b: b, sig: sig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Verify(tt.pub, tt.b, tt.sig); got != tt.want {
				t.Errorf("Verify = %v, want %v", got, tt.want)
			}
		})
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
		ok   bool
	}{
		{"v1.0.0", "v1.0.0", 0, true},
		{"1.0.0", "v1.0.0", 0, true},
		{"v0.0.1-old", "v9.9.9", -1, true},
		{"v9.9.9", "v0.0.1-old", 1, true},
		{"v1.10.0", "v1.9.0", 1, true},
		{"v1.0.10", "v1.0.9", 1, true},
		{"v10.0.0", "v9.99.99", 1, true},
		{"v123456789012345678901234567890.0.0", "v99999999999999999999999999999.0.0", 1, true},
		{"v1.0.0-rc.1", "v1.0.0", -1, true},
		{"v1.0.0", "v1.0.0-rc.1", 1, true},
		// The examples of semver.org 2.0.0, item 11, in increasing order.
		{"1.0.0-alpha", "1.0.0-alpha.1", -1, true},
		{"1.0.0-alpha.1", "1.0.0-alpha.beta", -1, true},
		{"1.0.0-alpha.beta", "1.0.0-beta", -1, true},
		{"1.0.0-beta", "1.0.0-beta.2", -1, true},
		{"1.0.0-beta.2", "1.0.0-beta.11", -1, true},
		{"1.0.0-beta.11", "1.0.0-rc.1", -1, true},
		{"1.0.0-rc.1", "1.0.0", -1, true},
		{"v1.2.3+build.1", "v1.2.3+build.2", 0, true},
		{"v1.2.3-4-gabcdef", "v1.2.3", -1, true}, // git describe: a pre-release of v1.2.3, as semver reads it
		// Not semantic versions: no order.
		{"dev", "v1.0.0", 0, false},
		{"v1.0.0", "419bb04", 0, false},
		{"v1.0", "v1.0.0", 0, false},
		{"v01.0.0", "v1.0.0", 0, false},
		{"v1.0.0-01", "v1.0.0", 0, false},
		{"v1.0.0-", "v1.0.0", 0, false},
		{"v1.0.0+", "v1.0.0", 0, false},
		{"v1.0.0-a..b", "v1.0.0", 0, false},
		{"v1.0.0-a_b", "v1.0.0", 0, false},
		{"", "v1.0.0", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.a+"_vs_"+tt.b, func(t *testing.T) {
			got, ok := CompareVersions(tt.a, tt.b)
			if got != tt.want || ok != tt.ok {
				t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d, %v", tt.a, tt.b, got, ok, tt.want, tt.ok)
			}
			if back, ok2 := CompareVersions(tt.b, tt.a); ok2 != ok || back != -got {
				t.Errorf("CompareVersions(%q, %q) = %d, %v: not the opposite", tt.b, tt.a, back, ok2)
			}
		})
	}
}

// FuzzStatement checks the statement's encoding: two builds that differ in
// any field never have the same statement (so a signature can only ever
// be taken for the build it was made for), a statement always starts with
// the context, and Verify never panics on any input.
func FuzzStatement(f *testing.F) {
	f.Add("v1.2.3", "linux", "amd64", digest, "v1.2.3l", "inux", "amd64", digest, "")
	f.Add("v1.0.0", "windows", "arm64", strings.ToUpper(digest), "v1.0.0", "windows", "arm64", digest, "AAAA")
	f.Add("", "", "", digest, "", "", "", strings.Repeat("00", 32), "not base64!")
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	f.Fuzz(func(t *testing.T, v1, os1, arch1, sha1, v2, os2, arch2, sha2, sig string) {
		b1 := Build{Version: v1, OS: os1, Arch: arch1, SHA256: sha1}
		b2 := Build{Version: v2, OS: os2, Arch: arch2, SHA256: sha2}
		s1, err1 := Statement(b1)
		s2, err2 := Statement(b2)
		if err1 == nil && !bytes.HasPrefix(s1, []byte(statementContext)) {
			t.Fatalf("statement without context: %q", s1)
		}
		if err1 == nil && err2 == nil && bytes.Equal(s1, s2) {
			d1, _ := hex.DecodeString(sha1)
			d2, _ := hex.DecodeString(sha2)
			if v1 != v2 || os1 != os2 || arch1 != arch2 || !bytes.Equal(d1, d2) {
				t.Fatalf("%+v and %+v have the same statement", b1, b2)
			}
		}
		_ = Verify(pub, b1, sig)
		if err1 == nil {
			good, err := Sign(priv, b1)
			if err != nil || !Verify(pub, b1, good) {
				t.Fatalf("a signature of %+v does not verify: %v", b1, err)
			}
			if err2 == nil && !bytes.Equal(s1, s2) && Verify(pub, b2, good) {
				t.Fatalf("the signature of %+v verifies for %+v", b1, b2)
			}
		}
	})
}
