package gitsync

import "errors"

var (
	// ErrUnsigned is recorded in Revision.VerifyErr when signature
	// verification is required and the head commit carries no signature.
	ErrUnsigned = errors.New("commit is not signed")
	// ErrUnknownSigner is recorded in Revision.VerifyErr when the head commit
	// is signed by a key that is not listed, or its signature does not verify.
	ErrUnknownSigner = errors.New("commit is not signed by an allowed key")
	// ErrSymlink is returned when the policy folder contains a symbolic link.
	ErrSymlink = errors.New("symbolic links are not allowed in the policy folder")
	// ErrSubmodule is returned when the policy folder contains a Git submodule.
	ErrSubmodule = errors.New("submodules are not allowed in the policy folder")
	// ErrTooLarge is returned when a file exceeds MaxFileSize or the folder
	// holds more than MaxFiles files.
	ErrTooLarge = errors.New("policy folder exceeds size limits")
	// ErrRefNotFound is returned when the remote has no such branch or ref.
	ErrRefNotFound = errors.New("ref not found on remote")
	// ErrPathNotFound is returned when the configured subfolder does not exist
	// (or is not a folder) at the fetched revision.
	ErrPathNotFound = errors.New("policy folder not found")
	// ErrUnknownHost is returned when an ssh server's host key is not listed
	// in the configured known_hosts file.
	ErrUnknownHost = errors.New("ssh host key is not in known_hosts")
	// ErrHostKeyMismatch is returned when an ssh server presents a host key
	// that differs from the one listed in known_hosts.
	ErrHostKeyMismatch = errors.New("ssh host key does not match known_hosts")
)
