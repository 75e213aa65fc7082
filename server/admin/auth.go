// Package admin is what operators may do to a running server and who they
// are: the use cases that the admin API (server/httpapi) and the console
// (server/console) share — issue and revoke enrollment tokens, revoke an
// envoy, ask it to rebootstrap or update — and the one authorization check
// that both apply to every request (Caller.Allows). Handlers translate
// HTTP to these calls and their errors back; the rules live here, once.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/token"
)

// Roles: what a credential may do.
const (
	// RoleAdmin may do everything.
	RoleAdmin = store.RoleAdmin
	// RoleReadOnly may look at everything (envoys, tokens without their
	// secrets, audit, policy) but change nothing.
	RoleReadOnly = store.RoleReadOnly
)

// ServerTokenName is the name of the server's own admin token (the one
// written to vigo-data/admin.token at first start): the actor of what is
// done with it.
const ServerTokenName = "admin"

// Access is what a request needs of its caller.
type Access int

const (
	// Read looks and changes nothing: any role.
	Read Access = iota
	// Change changes something (a token, an envoy, the policy control):
	// RoleAdmin only.
	Change
)

// Caller is who sent an authenticated admin request.
type Caller struct {
	// Name names the credential: the actor of the audit events the
	// request writes.
	Name string
	// Role is RoleAdmin or RoleReadOnly.
	Role string
	// TokenID is the id of a named admin token ("" for the server's own),
	// by which a session made with it is ended when it is revoked.
	TokenID string
	// ServerTokenHash is the SHA-256 of the server's own admin token when
	// that is the credential, by which a session made with it is ended
	// when the token is rotated.
	ServerTokenHash [32]byte
}

// Allows reports whether c may make a request that needs access. It is the
// one authorization check of the admin API and the console: both call it
// for every request, so that a role means the same on either.
func (c Caller) Allows(need Access) bool {
	switch need {
	case Read:
		return c.Role == RoleAdmin || c.Role == RoleReadOnly
	case Change:
		return c.Role == RoleAdmin
	}
	return false
}

// ErrInvalidCredential is returned for a credential that is not valid,
// whatever the reason (unknown, revoked, wrong secret): refusals do not
// tell which.
var ErrInvalidCredential = errors.New("admin credential is not valid")

// Authenticator turns a presented admin credential into its Caller, or
// ErrInvalidCredential. The admin API (Authorization: Bearer) and the
// console's sign-in use the same one.
type Authenticator interface {
	Authenticate(ctx context.Context, credential string) (Caller, error)
}

// ServerToken is the Authenticator of the server's own admin token, known
// by its SHA-256: it is RoleAdmin and named ServerTokenName.
type ServerToken struct {
	Hash [32]byte
}

// Authenticate implements Authenticator.
func (t ServerToken) Authenticate(_ context.Context, credential string) (Caller, error) {
	sum := sha256.Sum256([]byte(strings.TrimSpace(credential)))
	// Compare hashes in constant time: timing reveals nothing of the token.
	if subtle.ConstantTimeCompare(sum[:], t.Hash[:]) != 1 {
		return Caller{}, ErrInvalidCredential
	}
	return Caller{Name: ServerTokenName, Role: RoleAdmin, ServerTokenHash: t.Hash}, nil
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller that ctx carries (the zero Caller, which
// is allowed nothing, when none).
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// Tokens is the Authenticator of the server: the server's own admin token
// (Server: a ServerToken, or the server's files that follow a rotation;
// role admin, named ServerTokenName) and the named
// admin tokens of the store (vigocli admin-tokens create), each with its
// role. A named token is looked up by its id, which is not secret, and its
// secret compared in constant time.
type Tokens struct {
	Server Authenticator
	Store  store.Store
}

// Authenticate implements Authenticator.
func (t Tokens) Authenticate(ctx context.Context, credential string) (Caller, error) {
	credential = strings.TrimSpace(credential)
	tok, named := token.ParseAdmin(credential)
	if !named || t.Store == nil {
		if t.Server == nil {
			return Caller{}, ErrInvalidCredential
		}
		return t.Server.Authenticate(ctx, credential)
	}
	st, err := t.Store.GetAdminToken(ctx, tok.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Caller{}, ErrInvalidCredential
	case err != nil:
		return Caller{}, fmt.Errorf("look up admin token: %w", err)
	case !token.AdminCompare(st.SecretHash, tok) || !st.RevokedAt.IsZero():
		return Caller{}, ErrInvalidCredential
	}
	return Caller{Name: st.Name, Role: st.Role, TokenID: st.ID}, nil
}

// StillValid reports whether the credential c authenticated with is still
// valid: a named admin token may have been revoked since, the server's
// own token rotated (the console
// asks at every request of a session, so that revoking a token ends its
// sessions at once).
func (t Tokens) StillValid(ctx context.Context, c Caller) (bool, error) {
	if c.TokenID == "" {
		// The server's own token: still valid unless it was rotated.
		if r, ok := t.Server.(Revocable); ok {
			return r.StillValid(ctx, c)
		}
		return true, nil
	}
	if t.Store == nil {
		return true, nil
	}
	st, err := t.Store.GetAdminToken(ctx, c.TokenID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up admin token: %w", err)
	}
	return st.RevokedAt.IsZero(), nil
}

// Revocable is implemented by Authenticators whose credentials can be
// revoked while a session made with one lives (Tokens).
type Revocable interface {
	StillValid(ctx context.Context, c Caller) (bool, error)
}
