package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/vigo-enroll/vigo/schemas/atomicfile"
	"github.com/vigo-enroll/vigo/server/admin"
)

// adminTokenRe is the shape of an admin token: what the server generates
// (va_ and 52 base32 characters) or an operator-provisioned one of at
// least 32 characters after the prefix.
var adminTokenRe = regexp.MustCompile(`^va_[A-Za-z0-9_-]{32,}$`)

// adminToken loads the SHA-256 of the admin token, generating the token at
// first start: the token goes to tokenFile (0600, for vigocli on this host)
// and only its hash to tokenFile+".sha256", which is what the server
// checks. A plain SHA-256 is enough here (unlike the bcrypt of enrollment
// tokens) because the token carries 256 random bits: there is nothing to
// brute-force.
//
// An existing token file is never overwritten: when the hash file is
// missing (a replica given only admin.token, a restored backup), the hash
// is recomputed from the token; a token file that holds no admin token is
// an error, not a reason to make a new one that would lock the operators
// out.
//
// It returns what it did: created a token, or recomputed the hash (with
// saveErr when the hash file could not be written, e.g. on a read-only
// mount: the hash is then used from memory and recomputed at each start).
func adminToken(tokenFile string) (hash [32]byte, created, recomputed bool, saveErr, err error) {
	hashFile := tokenFile + ".sha256" // StatePaths.AdminTokenHash
	data, err := os.ReadFile(hashFile)
	if err == nil {
		b, derr := hex.DecodeString(strings.TrimSpace(string(data)))
		if derr != nil || len(b) != 32 {
			return hash, false, false, nil, fmt.Errorf("admin token hash %s is corrupt: delete it (it is recomputed from %s, or a new admin token is generated when that is absent too)", hashFile, tokenFile)
		}
		copy(hash[:], b)
		return hash, false, false, nil, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return hash, false, false, nil, fmt.Errorf("read admin token hash: %w", err)
	}

	tok, err := readAdminToken(tokenFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		tok = newAdminToken()
		switch err := atomicfile.WriteNew(tokenFile, []byte(tok+"\n"), 0o600); {
		case errors.Is(err, fs.ErrExist):
			// Another replica on a shared folder was faster: use its token.
			if tok, err = readAdminToken(tokenFile); err != nil {
				return hash, false, false, nil, err
			}
			recomputed = true
		case err != nil:
			return hash, false, false, nil, fmt.Errorf("write admin token: %w", err)
		default:
			created = true
		}
	case err != nil:
		return hash, false, false, nil, err
	default:
		recomputed = true
	}
	hash = sha256.Sum256([]byte(tok))
	if err := atomicfile.Write(hashFile, []byte(hex.EncodeToString(hash[:])+"\n"), 0o600); err != nil {
		if created {
			return hash, false, false, nil, fmt.Errorf("write admin token hash: %w", err)
		}
		saveErr = err
	}
	return hash, created, recomputed, saveErr, nil
}

// readAdminToken reads and checks an existing token file. Errors never
// include the file's content.
func readAdminToken(tokenFile string) (string, error) {
	data, err := os.ReadFile(tokenFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		return "", fmt.Errorf("read admin token: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if !adminTokenRe.MatchString(tok) {
		return "", fmt.Errorf("admin token file %s holds no admin token (va_ followed by at least 32 letters, digits, _ or -): fix it, or delete it to have a new token generated", tokenFile)
	}
	return tok, nil
}

// newAdminToken returns a fresh server admin token: va_ and 52 base32
// characters (256 random bits).
func newAdminToken() string {
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	return "va_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw[:]))
}

// readAdminTokenHash reads a hash file: the hex SHA-256 of the token,
// optionally followed by a space and the RFC 3339 time until which it is
// accepted (the previous token's file).
func readAdminTokenHash(file string) (sum [32]byte, until time.Time, err error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return sum, until, err
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 || len(fields) > 2 {
		return sum, until, fmt.Errorf("admin token hash %s is corrupt", file)
	}
	b, err := hex.DecodeString(fields[0])
	if err != nil || len(b) != 32 {
		return sum, until, fmt.Errorf("admin token hash %s is corrupt", file)
	}
	copy(sum[:], b)
	if len(fields) == 2 {
		if until, err = time.Parse(time.RFC3339, fields[1]); err != nil {
			return sum, until, fmt.Errorf("admin token hash %s: bad expiry: %w", file, err)
		}
	}
	return sum, until, nil
}

// AdminTokenRotation is what RotateAdminToken did.
type AdminTokenRotation struct {
	// Token is the new admin token (written to the token file too).
	Token string
	// PreviousUntil is when the previous token stops being accepted
	// (zero: at once).
	PreviousUntil time.Time
	// Unchanged is set when the given token already was the current one:
	// nothing was written (running the command twice with the same
	// --token-file is safe).
	Unchanged bool
}

// RotateAdminToken replaces the server's own admin token: the new one
// (newToken, or a generated one when "") goes to the token file and its
// hash to the hash file, and the previous one stays accepted until
// now+grace (its hash and that time in the previous-hash file; grace 0
// ends it at once). A running server notices at its next admin request:
// no restart. The files are written in an order that never locks the
// operators out: the previous hash first, then the new hash, then the
// token, so that a crash in between leaves the token file holding a token
// the server accepts.
func RotateAdminToken(p StatePaths, newToken string, grace time.Duration, now time.Time) (AdminTokenRotation, error) {
	if grace < 0 {
		return AdminTokenRotation{}, fmt.Errorf("grace period %s: must not be negative", grace)
	}
	if newToken == "" {
		newToken = newAdminToken()
	} else if newToken = strings.TrimSpace(newToken); !adminTokenRe.MatchString(newToken) {
		return AdminTokenRotation{}, errors.New("the new admin token must be va_ followed by at least 32 letters, digits, _ or -")
	}
	cur, _, err := readAdminTokenHash(p.AdminTokenHash)
	if errors.Is(err, fs.ErrNotExist) {
		// A server given only the token file: its hash is that token's.
		tok, terr := readAdminToken(p.AdminToken)
		if terr != nil {
			if errors.Is(terr, fs.ErrNotExist) {
				return AdminTokenRotation{}, fmt.Errorf("no admin token to rotate: neither %s nor %s exists (the server creates them at first start)", p.AdminTokenHash, p.AdminToken)
			}
			return AdminTokenRotation{}, terr
		}
		cur, err = sha256.Sum256([]byte(tok)), nil
	}
	if err != nil {
		return AdminTokenRotation{}, err
	}
	next := sha256.Sum256([]byte(newToken))
	if next == cur {
		return AdminTokenRotation{Token: newToken, Unchanged: true}, nil
	}
	r := AdminTokenRotation{Token: newToken}
	if grace > 0 {
		r.PreviousUntil = now.Add(grace).UTC().Truncate(time.Second)
		line := hex.EncodeToString(cur[:]) + " " + r.PreviousUntil.Format(time.RFC3339) + "\n"
		if err := atomicfile.Write(p.AdminTokenPrevious, []byte(line), 0o600); err != nil {
			return AdminTokenRotation{}, fmt.Errorf("write the previous admin token's hash: %w", err)
		}
	} else if err := os.Remove(p.AdminTokenPrevious); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return AdminTokenRotation{}, fmt.Errorf("remove the previous admin token's hash: %w", err)
	}
	if err := atomicfile.Write(p.AdminTokenHash, []byte(hex.EncodeToString(next[:])+"\n"), 0o600); err != nil {
		return AdminTokenRotation{}, fmt.Errorf("write admin token hash: %w", err)
	}
	if err := atomicfile.Write(p.AdminToken, []byte(newToken+"\n"), 0o600); err != nil {
		return AdminTokenRotation{}, fmt.Errorf("write admin token (its hash is already written: run the command again with the same --token-file, or again without to get another token): %w", err)
	}
	return r, nil
}

// adminTokenFiles is the server's own admin token as its files say, for
// admin.Tokens: the current hash, and the previous one until its expiry
// during a rotation. The files are looked at (a stat each) at every admin
// request and re-read when they changed, so that vigosrv admin-token
// rotate takes effect without a restart. When a file cannot be read or is
// corrupt the last good hashes stay in use (and the error is logged once
// per change): a half-edited file never locks the operators out.
type adminTokenFiles struct {
	hashFile, prevFile string
	now                func() time.Time
	log                *slog.Logger
	// rotated is called when the current hash changes (not at the first
	// load), with when the previous token stops being accepted.
	rotated func(previousUntil time.Time)

	mu        sync.Mutex
	stamps    [2]fileStamp
	cur, prev [32]byte
	prevUntil time.Time
}

func newAdminTokenFiles(p StatePaths, current [32]byte, log *slog.Logger, rotated func(time.Time)) *adminTokenFiles {
	f := &adminTokenFiles{hashFile: p.AdminTokenHash, prevFile: p.AdminTokenPrevious, now: time.Now, log: log, rotated: rotated, cur: current}
	f.stamps[0] = stampOf(f.hashFile)
	f.loadPrevious()
	return f
}

// stampOf identifies a version of a file (an atomic write replaces it,
// which changes its modification time); a missing file has the zero stamp.
func stampOf(name string) fileStamp {
	s, _ := stamp(name)
	return s
}

func (f *adminTokenFiles) loadPrevious() {
	f.stamps[1] = stampOf(f.prevFile)
	sum, until, err := readAdminTokenHash(f.prevFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.prev, f.prevUntil = [32]byte{}, time.Time{}
	case err != nil:
		f.log.Error("ignoring the previous admin token", "err", err)
		f.prev, f.prevUntil = [32]byte{}, time.Time{}
	default:
		f.prev, f.prevUntil = sum, until
	}
}

// refresh re-reads the files that changed since the last look.
func (f *adminTokenFiles) refresh() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := stampOf(f.hashFile); s != f.stamps[0] {
		f.stamps[0] = s
		sum, _, err := readAdminTokenHash(f.hashFile)
		switch {
		case err != nil:
			f.log.Error("admin token hash changed but cannot be used: the previous one stays in use", "file", f.hashFile, "err", err)
		case sum != f.cur:
			f.cur = sum
			f.loadPrevious()
			if f.rotated != nil {
				f.rotated(f.prevUntil)
			}
		}
	}
	if s := stampOf(f.prevFile); s != f.stamps[1] {
		f.loadPrevious()
	}
}

// Authenticate implements admin.Authenticator.
func (f *adminTokenFiles) Authenticate(ctx context.Context, credential string) (admin.Caller, error) {
	f.refresh()
	f.mu.Lock()
	cur, prev, until := f.cur, f.prev, f.prevUntil
	f.mu.Unlock()
	c, err := admin.ServerToken{Hash: cur}.Authenticate(ctx, credential)
	if err == nil || until.IsZero() || !f.now().Before(until) {
		return c, err
	}
	return admin.ServerToken{Hash: prev}.Authenticate(ctx, credential)
}

// StillValid implements admin.Revocable: a console session made with the
// server's token ends when that token is no longer accepted (rotated, and
// its grace period over).
func (f *adminTokenFiles) StillValid(_ context.Context, c admin.Caller) (bool, error) {
	f.refresh()
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.ServerTokenHash == f.cur {
		return true, nil
	}
	return c.ServerTokenHash == f.prev && !f.prevUntil.IsZero() && f.now().Before(f.prevUntil), nil
}
