package update

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// TestIssue12Item3NoDowngradeOrForeignBuild: a validly signed build is
// installed only when it is this version-or-newer for this platform
// (security review M5: an agent at v9.9.9 installed a signed v0.0.1-old,
// because the signature covered the digest only). The signature covers
// the statement of version, OS, arch and digest; the agent checks the
// version order itself and honours a downgrade only with the check-in's
// allow_downgrade.
func TestIssue12Item3NoDowngradeOrForeignBuild(t *testing.T) {
	t.Parallel()
	pub, priv := newKey(t)
	tests := []struct {
		name    string
		current string // running version; "" = v1.0.0
		allow   bool   // the check-in's allow_downgrade
		prepare func(d *distServer) apiv1.AgentLatest
		wantErr error // nil: installed
	}{
		{
			name: "the review's repro: v9.9.9 offered a signed v0.0.1-old", current: "v9.9.9",
			prepare: func(d *distServer) apiv1.AgentLatest {
				return d.announce("v0.0.1-old", []byte("old vulnerable build"), priv)
			},
			wantErr: ErrDowngrade,
		},
		{
			name: "the same with the operator's allow_downgrade", current: "v9.9.9", allow: true,
			prepare: func(d *distServer) apiv1.AgentLatest {
				return d.announce("v0.0.1-old", []byte("old vulnerable build"), priv)
			},
		},
		{
			name: "a pre-release of the running version",
			prepare: func(d *distServer) apiv1.AgentLatest {
				return d.announce("v1.0.0-rc.1", []byte("release candidate"), priv)
			},
			wantErr: ErrDowngrade,
		},
		{
			name: "versions that cannot be ordered", current: "dev",
			prepare: func(d *distServer) apiv1.AgentLatest { return d.announce("v1.1.0", []byte("a release"), priv) },
			wantErr: ErrDowngrade,
		},
		{
			name: "versions that cannot be ordered, allowed", current: "dev", allow: true,
			prepare: func(d *distServer) apiv1.AgentLatest { return d.announce("v1.1.0", []byte("a release"), priv) },
		},
		{
			name:    "a newer version",
			prepare: func(d *distServer) apiv1.AgentLatest { return d.announce("v1.0.1", []byte("a fix"), priv) },
		},
		{
			name: "another platform's signed build of the same bytes",
			prepare: func(d *distServer) apiv1.AgentLatest {
				l := d.announce("v1.1.0", []byte("arm64 build"), nil)
				arm := l
				arm.Arch = "arm64"
				d.latest.Signature = sign(priv, arm) // signed for linux/arm64, served as linux/amd64
				return d.latest
			},
			wantErr: ErrBadSignature,
		},
		{
			name: "an announcement for another platform",
			prepare: func(d *distServer) apiv1.AgentLatest {
				d.announce("v1.1.0", []byte("windows build"), priv)
				d.latest.OS = "windows"
				d.latest.Signature = sign(priv, d.latest)
				return d.latest
			},
			wantErr: ErrWrongPlatform,
		},
		{
			name: "an old build relabelled as a newer version",
			prepare: func(d *distServer) apiv1.AgentLatest {
				d.announce("v0.9.0", []byte("old build"+" relabelled"), priv)
				d.latest.Version = "v1.2.0"
				return d.latest
			},
			wantErr: ErrBadSignature,
		},
		{
			name: "a signature over the digest only (the format before issue 12)",
			prepare: func(d *distServer) apiv1.AgentLatest {
				d.announce("v1.1.0", []byte("new build"), nil)
				sum := sha256.Sum256(d.build)
				d.latest.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, sum[:]))
				return d.latest
			},
			wantErr: ErrBadSignature,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDistServer(t)
			d.keyPEM = pubPEM(t, pub)
			u, calls := setup(t, d, pub)
			if tt.current != "" {
				u.CurrentVersion = tt.current
			}
			want := tt.prepare(d)
			err := u.Apply(context.Background(), want, tt.allow)
			if tt.wantErr == nil {
				if err != nil || len(*calls) != 1 || readFile(t, u.BinaryPath) != string(d.build) {
					t.Fatalf("Apply: %v; exec calls %d, binary %q: want the build installed", err, len(*calls), readFile(t, u.BinaryPath))
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply: %v, want %v", err, tt.wantErr)
			}
			if len(*calls) != 0 || readFile(t, u.BinaryPath) != "old build" || d.downloads.Load() != 0 {
				t.Errorf("refused build: exec calls %d, downloads %d, binary %q", len(*calls), d.downloads.Load(), readFile(t, u.BinaryPath))
			}
		})
	}
}

// TestIssue12Item3UpdateCarriesAllowDowngrade: the check-in's
// allow_downgrade reaches Apply through Update.
func TestIssue12Item3UpdateCarriesAllowDowngrade(t *testing.T) {
	t.Parallel()
	pub, priv := newKey(t)
	d := newDistServer(t)
	d.keyPEM = pubPEM(t, pub)
	u, calls := setup(t, d, pub)
	u.CurrentVersion = "v2.0.0"
	d.announce("v1.0.0", []byte("the previous release"), priv)
	if err := u.Update(context.Background(), Want{Version: "v1.0.0"}); !errors.Is(err, ErrDowngrade) {
		t.Fatalf("Update without allow_downgrade: %v", err)
	}
	if err := u.Update(context.Background(), Want{Version: "v1.0.0", SHA256: d.latest.SHA256, AllowDowngrade: true}); err != nil || len(*calls) != 1 {
		t.Fatalf("Update with allow_downgrade: %v, exec calls %d", err, len(*calls))
	}
}

// TestIssue12Item3PinOnFirstSignedUpdate: with no key pinned at
// registration (the server had none then) and a signed build, the agent
// fetches the server's key over mTLS, verifies the build with it and pins
// it; it never installs a signed build unverified (before issue 12 it
// installed it with only a warning).
func TestIssue12Item3PinOnFirstSignedUpdate(t *testing.T) {
	t.Parallel()
	pub, priv := newKey(t)
	_, otherPriv := newKey(t)
	pinErr := errors.New("disk full")
	tests := []struct {
		name      string
		servedKey bool
		signer    ed25519.PrivateKey // nil: unsigned
		pinFails  bool
		wantErr   error // nil: installed; errAny: any error
		wantPin   bool
	}{
		{name: "signed, the served key verifies it: installed and pinned", servedKey: true, signer: priv, wantPin: true},
		{name: "signed by another key than the served one", servedKey: true, signer: otherPriv, wantErr: ErrBadSignature},
		{name: "signed, but the server serves no key", signer: priv, wantErr: errAny},
		{name: "signed and verified, but the key cannot be saved", servedKey: true, signer: priv, pinFails: true, wantErr: pinErr},
		{name: "unsigned, no key anywhere: SHA-256 only, as before", signer: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDistServer(t)
			if tt.servedKey {
				d.keyPEM = pubPEM(t, pub)
			}
			u, calls := setup(t, d, nil)
			var pinned ed25519.PublicKey
			u.PinSigningKey = func(k ed25519.PublicKey) error {
				if tt.pinFails {
					return pinErr
				}
				pinned = k
				return nil
			}
			want := d.announce("v1.1.0", []byte("new build"), tt.signer)
			err := u.Apply(context.Background(), want, false)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Apply: %v", err)
			case tt.wantErr == errAny && err == nil, tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("Apply: %v, want %v", err, tt.wantErr)
			}
			if installed := len(*calls) == 1; installed != (tt.wantErr == nil) {
				t.Errorf("installed %v with error %v", installed, err)
			}
			if tt.wantErr != nil && d.downloads.Load() != 0 {
				t.Errorf("downloaded %d times before refusing", d.downloads.Load())
			}
			if got := pinned != nil; got != tt.wantPin || (got && !pinned.Equal(pub)) {
				t.Errorf("pinned %x, want pinned: %v", pinned, tt.wantPin)
			}
		})
	}
}

var errAny = errors.New("any error")
