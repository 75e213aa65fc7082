package gitsync

import (
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
)

func TestLoadAllowedSigners(t *testing.T) {
	t.Parallel()
	k := gitsynctest.NewSSHKey(t)
	tests := []struct {
		name    string
		line    string
		listed  bool
		wantErr bool
	}{
		{name: "plain", line: "a@example.com " + k.Public, listed: true},
		{name: "git namespace", line: `a@example.com namespaces="file,git" ` + k.Public, listed: true},
		{name: "other namespace", line: `a@example.com namespaces="file" ` + k.Public},
		{name: "valid-after and valid-before", line: `a@example.com valid-after="20260101",valid-before="20270101Z" ` + k.Public, listed: true},
		// Before, these lines were skipped without a word (gitops review F4).
		{name: "cert authority is refused", line: "*@example.com cert-authority " + k.Public, wantErr: true},
		{name: "unknown option is refused", line: `a@example.com no-touch-required ` + k.Public, wantErr: true},
		{name: "bad time is refused", line: `a@example.com valid-after="2026-01-01" ` + k.Public, wantErr: true},
		{name: "comment", line: "# a@example.com " + k.Public},
		{name: "missing key", line: "a@example.com", wantErr: true},
		{name: "junk key", line: "a@example.com ssh-ed25519 AAAAjunk", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			as, err := loadAllowedSigners(writeTemp(t, "allowed_signers", "\n"+tt.line+"\n"))
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := as.keys[k.Fingerprint]; ok != tt.listed {
				t.Errorf("listed = %v, want %v", ok, tt.listed)
			}
		})
	}
}

func TestParseSSHSigRejectsJunk(t *testing.T) {
	t.Parallel()
	as := &allowedSigners{}
	for _, sig := range []string{"", "junk", "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"} {
		if _, err := as.verify(sig, []byte("msg"), time.Now()); err == nil || !strings.Contains(err.Error(), "not signed by an allowed key") {
			t.Errorf("verify(%q) = %v, want ErrUnknownSigner", sig, err)
		}
	}
}

// FuzzSSHSig feeds arbitrary armored blobs to the verifier: it must never
// panic and never accept.
func FuzzSSHSig(f *testing.F) {
	f.Add([]byte("SSHSIG\x00\x00\x00\x01"))
	f.Add([]byte{})
	f.Add([]byte("SSHSIG\x00\x00\x00\x01\x00\x00\x00\x0bssh-ed25519"))
	as := &allowedSigners{}
	f.Fuzz(func(t *testing.T, blob []byte) {
		armored := string(pem.EncodeToMemory(&pem.Block{Type: "SSH SIGNATURE", Bytes: blob}))
		if fp, err := as.verify(armored, []byte("message"), time.Now()); err == nil {
			t.Fatalf("accepted a signature by %s with no allowed signers", fp)
		}
	})
}
