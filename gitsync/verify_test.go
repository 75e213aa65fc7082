package gitsync

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
)

// TestVerifyModes: an unsigned commit under a signed head is applied in
// mode head (Flux's default) and refused in mode all, naming the commit;
// a merged branch's unsigned commit is found too; after the refusal a
// fully signed head still verifies from the last verified one.
func TestVerifyModes(t *testing.T) {
	t.Parallel()
	key := gitsynctest.NewSSHKey(t)
	signers := gitsynctest.AllowedSigners(t, key)
	for _, mode := range []string{VerifyHead, VerifyAll} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			repo := gitsynctest.NewRepo(t)
			base := repo.CommitSigned(map[string]string{"a.cue": "v1"}, "signed base", key)
			repo.Push()
			g, err := NewGit(GitConfig{URL: repo.URL(), Verify: VerifyConfig{SSHAllowedSignersFile: signers, Mode: mode}})
			if err != nil {
				t.Fatal(err)
			}
			if rev, _ := mustFetch(t, g); rev.ID != base || rev.VerifyErr != nil {
				t.Fatalf("base: %s %v", rev.ID, rev.VerifyErr)
			}
			unsigned := repo.Commit(map[string]string{"a.cue": "v2 sneaked in"}, "unsigned")
			head := repo.CommitSigned(map[string]string{"b.cue": "x"}, "signed on top", key)
			repo.Push()
			rev, _ := mustFetch(t, g)
			if rev.ID != head {
				t.Fatalf("head %s, want %s", rev.ID, head)
			}
			switch mode {
			case VerifyHead:
				if rev.VerifyErr != nil {
					t.Errorf("mode head: VerifyErr = %v, want nil (only the head is checked)", rev.VerifyErr)
				}
			case VerifyAll:
				if !errors.Is(rev.VerifyErr, ErrUnsigned) || !strings.Contains(rev.VerifyErr.Error(), unsigned[:12]) || !strings.Contains(rev.VerifyErr.Error(), `"unsigned"`) {
					t.Errorf("mode all: VerifyErr = %v, want the unsigned commit %s named", rev.VerifyErr, unsigned[:12])
				}
			}
		})
	}
	t.Run("all/merged branch", func(t *testing.T) {
		t.Parallel()
		repo := gitsynctest.NewRepo(t)
		base := repo.CommitSigned(map[string]string{"a.cue": "v1"}, "signed base", key)
		repo.Push()
		g, err := NewGit(GitConfig{URL: repo.URL(), Verify: VerifyConfig{SSHAllowedSignersFile: signers, Mode: VerifyAll}})
		if err != nil {
			t.Fatal(err)
		}
		g.SetVerifiedBase(base) // as after a restart with base active
		repo.Git("checkout", "--quiet", "-b", "feature")
		side := repo.Commit(map[string]string{"c.cue": "from a branch"}, "unsigned on a branch")
		repo.Git("checkout", "--quiet", "main")
		repo.Git("-c", "gpg.format=ssh", "-c", "user.signingkey="+key.PrivateFile, "merge", "--quiet", "--no-ff", "-S", "-m", "signed merge", "feature")
		repo.Push()
		rev, _ := mustFetch(t, g)
		if !errors.Is(rev.VerifyErr, ErrUnsigned) || !strings.Contains(rev.VerifyErr.Error(), side[:12]) {
			t.Errorf("VerifyErr = %v, want the branch's unsigned commit %s", rev.VerifyErr, side[:12])
		}
	})
}

// TestSignersReloaded: a changed allowed_signers file is read at the next
// fetch, without a restart; a broken one fails the fetch (the old keys are
// not used on).
func TestSignersReloaded(t *testing.T) {
	t.Parallel()
	alice, bob := gitsynctest.NewSSHKey(t), gitsynctest.NewSSHKey(t)
	repo := gitsynctest.NewRepo(t)
	id := repo.CommitSigned(map[string]string{"a.cue": "x"}, "by bob", bob)
	repo.Push()
	signers := gitsynctest.AllowedSigners(t, alice)
	g, err := NewGit(GitConfig{URL: repo.URL(), Verify: VerifyConfig{SSHAllowedSignersFile: signers}})
	if err != nil {
		t.Fatal(err)
	}
	if rev, _ := mustFetch(t, g); !errors.Is(rev.VerifyErr, ErrUnknownSigner) {
		t.Fatalf("bob not listed: VerifyErr = %v", rev.VerifyErr)
	}
	both, err := os.ReadFile(gitsynctest.AllowedSigners(t, alice, bob))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(signers, both, 0o644); err != nil {
		t.Fatal(err)
	}
	if rev, _ := mustFetch(t, g); rev.ID != id || rev.VerifyErr != nil || rev.Signer != bob.Fingerprint {
		t.Errorf("after adding bob: %s signer %q err %v", rev.ID, rev.Signer, rev.VerifyErr)
	}
	if err := os.WriteFile(signers, append(both, []byte("x@example.com cert-authority "+alice.Public+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "cert-authority is not supported") {
		t.Errorf("Fetch with a broken signers file = %v, want the parse error", err)
	}
}

// TestSignerValidity: a key valid only before the commit's time does not
// verify it.
func TestSignerValidity(t *testing.T) {
	t.Parallel()
	key := gitsynctest.NewSSHKey(t)
	repo := gitsynctest.NewRepo(t)
	repo.CommitSigned(map[string]string{"a.cue": "x"}, "signed now", key)
	repo.Push()
	signers := writeTemp(t, "allowed_signers", `a@example.com namespaces="git",valid-before="20200101" `+key.Public+"\n")
	g, err := NewGit(GitConfig{URL: repo.URL(), Verify: VerifyConfig{SSHAllowedSignersFile: signers}})
	if err != nil {
		t.Fatal(err)
	}
	if rev, _ := mustFetch(t, g); !errors.Is(rev.VerifyErr, ErrUnknownSigner) || !strings.Contains(rev.VerifyErr.Error(), "valid only before 2020-01-01") {
		t.Errorf("VerifyErr = %v, want the key's validity named", rev.VerifyErr)
	}
}
