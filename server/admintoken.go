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
	"strings"

	"github.com/vigo-enroll/vigo/server/ca"
)

// adminToken loads the SHA-256 of the admin token, generating the token at
// first start: the token goes to tokenFile (0600, for vigocli on this host)
// and only its hash to tokenFile+".sha256", which is what the server
// checks. A plain SHA-256 is enough here (unlike the bcrypt of enrollment
// tokens) because the token carries 256 random bits: there is nothing to
// brute-force.
func adminToken(tokenFile string) (hash [32]byte, created bool, err error) {
	hashFile := tokenFile + ".sha256" // StatePaths.AdminTokenHash
	data, err := os.ReadFile(hashFile)
	if err == nil {
		b, derr := hex.DecodeString(strings.TrimSpace(string(data)))
		if derr != nil || len(b) != 32 {
			return hash, false, fmt.Errorf("admin token hash %s is corrupt: delete it and %s to generate a new admin token", hashFile, tokenFile)
		}
		copy(hash[:], b)
		return hash, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return hash, false, fmt.Errorf("read admin token hash: %w", err)
	}
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	tok := "va_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw[:]))
	if err := ca.WriteFileAtomic(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		return hash, false, fmt.Errorf("write admin token: %w", err)
	}
	hash = sha256.Sum256([]byte(tok))
	if err := ca.WriteFileAtomic(hashFile, []byte(hex.EncodeToString(hash[:])+"\n"), 0o600); err != nil {
		return hash, false, fmt.Errorf("write admin token hash: %w", err)
	}
	return hash, true, nil
}
