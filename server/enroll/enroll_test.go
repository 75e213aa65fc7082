package enroll

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
	"github.com/vigo-enroll/vigo/server/token"
)

// newTestEnroller returns an Enroller on a real SQLite store and CA, with
// no policy.
func newTestEnroller(t *testing.T, cfg Config) (*Enroller, *sqlitestore.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlitestore.Open(t.Context(), filepath.Join(dir, "vigo.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := ca.LoadOrCreate(ca.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store, cfg.CA, cfg.Policy = lookupIgnoresCancel{st}, c, func() *policy.Policy { return nil }
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e, st
}

// lookupIgnoresCancel reads tokens even with a cancelled context, so that a
// test can see whether checkToken then waits for a bcrypt slot.
type lookupIgnoresCancel struct{ store.Store }

func (s lookupIgnoresCancel) GetToken(ctx context.Context, id string) (store.Token, error) {
	return s.Store.GetToken(context.WithoutCancel(ctx), id)
}

// TestUnknownTokenCostsABcrypt (issue 12, item 7): an unknown token id
// costs the same bcrypt comparison as a known one, under the same
// concurrency limit, so that response time does not tell whether an id
// exists. With every bcrypt slot taken, both wait (here: until their
// context ends); with a slot free, both get the same answer.
func TestUnknownTokenCostsABcrypt(t *testing.T) {
	e, st := newTestEnroller(t, Config{})
	known := token.Generate()
	hash, err := token.Hash(known)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := st.CreateToken(t.Context(), store.Token{ID: known.ID, SecretHash: hash, Pattern: "x.example.com", CreatedAt: now, ExpiresAt: now.Add(time.Hour)},
		store.AuditEvent{At: now, Type: store.AuditTokenCreated, TokenID: known.ID}); err != nil {
		t.Fatal(err)
	}
	wrong := token.Token{ID: known.ID, Secret: strings.Repeat("a", 32)}
	unknown := token.Token{ID: "zzzzzzzzzz", Secret: strings.Repeat("a", 32)}
	if known.ID == unknown.ID {
		t.Skip("the generated token has the unknown id")
	}
	for range cap(e.bcrypt) {
		e.bcrypt <- struct{}{}
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	for name, tok := range map[string]token.Token{"known id, wrong secret": wrong, "unknown id": unknown} {
		if _, msg, err := e.checkToken(cancelled, tok, now); !errors.Is(err, context.Canceled) {
			t.Errorf("%s, every bcrypt slot taken: got %q, %v; want to wait for a slot", name, msg, err)
		}
	}
	for range cap(e.bcrypt) {
		<-e.bcrypt
	}
	for name, tok := range map[string]token.Token{"known id, wrong secret": wrong, "unknown id": unknown} {
		if info, msg, err := e.checkToken(t.Context(), tok, now); info != nil || msg != "token is not valid" || err != nil {
			t.Errorf("%s: got %v, %q, %v; want token is not valid", name, info, msg, err)
		}
	}
}
