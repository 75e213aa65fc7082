package gitsync

import "errors"

var (
	// ErrUnsigned is recorded in Revision.VerifyErr when signature
	// verification is required and the head commit carries no signature.
	ErrUnsigned = errors.New("commit is not signed")
	// ErrUnknownSigner is recorded in Revision.VerifyErr when the head commit
	// is signed by a key that is not listed, or its signature does not verify.
	ErrUnknownSigner = errors.New("commit is not signed by an allowed key")
	// ErrRefNotFound is returned when the remote has no such branch or ref.
	ErrRefNotFound = errors.New("ref not found on remote")
	// ErrUnknownHost is returned when an ssh server's host key is not listed
	// in the configured known_hosts file.
	ErrUnknownHost = errors.New("ssh host key is not in known_hosts")
	// ErrHostKeyMismatch is returned when an ssh server presents a host key
	// that differs from the one listed in known_hosts.
	ErrHostKeyMismatch = errors.New("ssh host key does not match known_hosts")
)
