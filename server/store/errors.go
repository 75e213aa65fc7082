package store

import "errors"

var (
	// ErrNotFound is returned when the requested record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a write conflicts with existing state.
	ErrConflict = errors.New("conflict")
	// ErrHostnameTaken is returned by Enroll when an active envoy has the hostname and Force is false.
	ErrHostnameTaken = errors.New("an active envoy with this hostname already exists")
	// ErrTokenUnavailable is returned when a token is used, revoked, expired or unknown at consumption time.
	ErrTokenUnavailable = errors.New("token is used, revoked or expired")
	// ErrEnvoyRevoked is returned when an operation needs an active envoy and it is revoked.
	ErrEnvoyRevoked = errors.New("envoy is revoked")
)
