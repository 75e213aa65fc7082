// Package gitsync turns a policy source (a Git remote or a local folder)
// into a stream of revisions: an identifier and a read-only file tree. It
// knows nothing of CUE; the server's policy controller composes it with the
// policy package. go-git is used only in git.go.
package gitsync

import (
	"context"
	"time"
)

// Revision is one state of the policy source.
type Revision struct {
	// ID is the commit id for Git sources and "local@sha256:<tree hash>"
	// for local folders.
	ID string
	// Name names the revision for people, as Flux does: "main@sha1:<commit
	// id>" (the branch or tag, then the commit), or the ID for a folder.
	Name string
	// Subject is the first line of the commit message ("" for a folder).
	Subject string
	// Tree holds the policy files of the policy folder at this revision
	// (the configured subfolder of the repository, not its root), read with
	// the tree rules (see ReadDir), and the problems that refuse it. A
	// revision with problems must be rejected like an invalid policy.
	Tree
	// Time is the commit time (the newest modification time for a folder).
	Time time.Time
	// Author is "Name <email>" of the commit author ("" for a folder).
	Author string
	// Signer is the fingerprint of the key that signed the commit, "" when
	// signature verification is off or not applicable.
	Signer string
	// VerifyErr is set when commit signature verification is required and
	// this revision's head commit is unsigned or signed by an unlisted key.
	// Such a revision must be rejected like an invalid policy.
	VerifyErr error
}

// Source yields revisions of a policy source.
type Source interface {
	// Fetch returns the newest revision. When the head is unchanged since
	// the last call that returned a revision, it returns that same
	// revision again without transferring file contents (Changed false).
	Fetch(ctx context.Context) (rev Revision, changed bool, err error)
	// String describes the source for status and logs, without secrets.
	String() string
}

// Notifier is implemented by sources that learn of changes by themselves
// (the local folder watcher). The controller calls Fetch after each signal.
type Notifier interface {
	// Changes is signalled (coalesced) whenever the source may have a new revision.
	Changes() <-chan struct{}
}

// VerifiedBaser is implemented by sources that verify every commit since
// the last verified one (Git in VerifyAll mode). A controller that restores
// a revision after a restart tells the source it was verified.
type VerifiedBaser interface {
	SetVerifiedBase(id string)
}
