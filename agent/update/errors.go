package update

import "errors"

var (
	// ErrChecksumMismatch is returned when the downloaded binary's SHA-256 differs from the announced one.
	ErrChecksumMismatch = errors.New("downloaded agent does not match its SHA-256")
	// ErrUnsigned is returned when a signing key was pinned at registration and the build carries no signature.
	ErrUnsigned = errors.New("agent build is not signed but a signing key is pinned")
	// ErrBadSignature is returned when the build's signature does not verify, over its version, this
	// agent's OS and arch and its digest, with the pinned signing key (or, with none pinned, the key
	// the server serves).
	ErrBadSignature = errors.New("agent build signature does not verify with the pinned signing key")
	// ErrDowngrade is returned when the build is older than the running agent, or cannot be ordered
	// against it, and the check-in did not allow a downgrade.
	ErrDowngrade = errors.New("a downgrade needs the operator's consent (vigocli envoys update --allow-downgrade)")
	// ErrWrongPlatform is returned when the announced build is for another OS or architecture.
	ErrWrongPlatform = errors.New("agent build is for another platform")
	// ErrSigningKeyChanged is returned when the server serves a signing key other than the pinned one.
	ErrSigningKeyChanged = errors.New("server serves a signing key other than the one pinned at registration")
	// ErrAlreadyInstalled is returned when the installed binary already is the announced build although
	// the versions differ: updating again would exec the same binary in a loop.
	ErrAlreadyInstalled = errors.New("the announced build is already installed but reports another version")
	// ErrVersionUnavailable is returned by Update when the server does not serve the version it asked for.
	ErrVersionUnavailable = errors.New("requested agent version is not the one served")
	// ErrRestartRequired is returned by the default exec on Windows, where a process cannot replace
	// itself: the caller exits non-zero and the service manager restarts the new binary.
	ErrRestartRequired = errors.New("agent updated; restart required")
)
