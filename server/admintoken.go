package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"

	"github.com/vigo-enroll/vigo/schemas/atomicfile"
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
		var raw [32]byte
		_, _ = rand.Read(raw[:])
		tok = "va_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw[:]))
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
