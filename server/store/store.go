// Package store defines the persistent state of the server: one-time tokens,
// envoys, audit events and the last good policy revision. Implementations live
// in sqlitestore and pgstore and both pass the shared suite in storetest.
//
// Every guarantee the enrollment flow relies on (a token is used once, a
// hostname has at most one active envoy, a revoked UUID never becomes active
// again) is enforced by the database itself with unique constraints and
// conditional updates, never by a lock in one process, so that several server
// replicas can share one database.
package store

import (
	"context"
	"time"
)

// Store is the persistent state of the server. All methods are safe for
// concurrent use. Times are stored with at least millisecond precision and
// returned in UTC.
type Store interface {
	// Enroll creates an envoy in one transaction: when p.TokenID is set the
	// token is consumed (it must be unused, unrevoked and unexpired at p.Now,
	// else ErrTokenUnavailable); when an active envoy has the same hostname
	// the call fails with ErrHostnameTaken unless p.Force, in which case that
	// envoy is revoked with reason p.ReplaceReason, by default "replaced"
	// (ReplacedBy = the new UUID);
	// the audit event p.Audit is appended. Nothing is written when it fails.
	// It returns the envoys that were replaced.
	Enroll(ctx context.Context, p EnrollParams) (replaced []Envoy, err error)

	// CreateToken stores a new token and appends audit in one transaction.
	// ErrConflict when the id exists.
	CreateToken(ctx context.Context, t Token, audit AuditEvent) error
	// GetToken returns the token with this id, or ErrNotFound.
	GetToken(ctx context.Context, id string) (Token, error)
	// ListTokens returns all tokens, newest first.
	ListTokens(ctx context.Context) ([]Token, error)
	// RevokeToken marks the token revoked at `at` and appends audit.
	// ErrNotFound when unknown; ErrTokenUnavailable when already used or revoked.
	RevokeToken(ctx context.Context, id string, at time.Time, audit AuditEvent) error

	// GetEnvoy returns the envoy with this UUID, or ErrNotFound.
	GetEnvoy(ctx context.Context, uuid string) (Envoy, error)
	// GetActiveEnvoyByHostname returns the active envoy with this hostname, or ErrNotFound.
	GetActiveEnvoyByHostname(ctx context.Context, hostname string) (Envoy, error)
	// ListEnvoys returns envoys matching f, ordered by created_at then uuid
	// (by the time of their last change with f.ChangedSince).
	ListEnvoys(ctx context.Context, f EnvoyFilter) ([]Envoy, error)
	// QueryEnvoys returns a page of the envoys matching q, in q's order:
	// at most q.Limit, starting after q.After or ending before q.Before
	// (keyset pagination: a deep page costs what the first one does).
	QueryEnvoys(ctx context.Context, q EnvoyQuery) ([]Envoy, error)
	// CountEnvoys counts the envoys matching q's filters, at most q.Limit
	// of them when it is set (its order and cursors are ignored).
	CountEnvoys(ctx context.Context, q EnvoyQuery) (int, error)
	// CountFleet counts all envoys in one pass, grouped by status and
	// agent version, with how many of each group are not seen since
	// q.SeenBefore and how many hold a certificate ending before each of
	// q.CertEndsBefore: the fleet's gauges, at a fixed cost per call.
	CountFleet(ctx context.Context, q FleetQuery) ([]FleetGroup, error)
	// RevokeEnvoys revokes every active envoy matched by one of rs (by UUID
	// or by hostname) and appends one "envoy.revoked" audit event for each.
	// Envoys already revoked are left alone. It returns the envoys it revoked.
	RevokeEnvoys(ctx context.Context, rs []Revocation) ([]Envoy, error)
	// SetEnvoyFlags sets the pending actions of an active envoy and appends
	// audit. ErrNotFound when unknown; ErrEnvoyRevoked when revoked.
	SetEnvoyFlags(ctx context.Context, uuid string, f EnvoyFlags, audit AuditEvent) error
	// RenewCertificate records a new certificate (and possibly a new public
	// key) for an active envoy, only if its current serial is p.OldSerial
	// (ErrConflict otherwise, ErrEnvoyRevoked when revoked), and appends audit.
	RenewCertificate(ctx context.Context, p RenewParams) error
	// RecordCheckins stores last_seen, agent version and peer address for a
	// batch of envoys. A later LastSeen never goes backwards, nor does
	// LastCheckinSigned (the newest Checkin.Signed recorded, whatever the
	// order of the batch or of the calls).
	RecordCheckins(ctx context.Context, cs []Checkin) error
	// SeenNonce records a check-in nonce of an envoy until expires and
	// reports whether that nonce was already recorded and not yet expired
	// (a replay). It is atomic across replicas sharing the database: of
	// concurrent calls with the same envoy and nonce exactly one returns
	// false. The envoy's expired nonces are deleted as a side effect; Prune
	// deletes the expired nonces of all envoys.
	SeenNonce(ctx context.Context, envoyUUID string, nonce []byte, expires time.Time) (seen bool, err error)

	// AppendAudit appends events (e.g. a denied registration).
	AppendAudit(ctx context.Context, evs ...AuditEvent) error
	// ListAudit returns events with At >= since, oldest first, at most limit
	// (0 = no limit).
	ListAudit(ctx context.Context, since time.Time, limit int) ([]AuditEvent, error)
	// QueryAudit returns the events matching q, newest first (by At, then
	// ID), at most q.Limit (0 = no limit).
	QueryAudit(ctx context.Context, q AuditQuery) ([]AuditEvent, error)
	// CountAudit counts the events of the given types (all when none) at
	// or after since, grouped by type, result, method and generalised
	// reason (see AuditCount), largest groups first.
	CountAudit(ctx context.Context, since time.Time, types ...string) ([]AuditCount, error)

	// SavePolicyRevision persists the last good policy revision (replacing
	// the previous one) so that a restart can serve it before the first sync.
	SavePolicyRevision(ctx context.Context, r PolicyRevision) error
	// LoadPolicyRevision returns the saved revision, or ErrNotFound.
	LoadPolicyRevision(ctx context.Context) (PolicyRevision, error)
	// SavePolicyRefusal remembers that a replica refused a revision
	// (replacing what was remembered of it), so that a restart never
	// evaluates it again. Only the newest MaxPolicyRefusals of a replica
	// are kept.
	SavePolicyRefusal(ctx context.Context, r PolicyRefusal) error
	// ListPolicyRefusals returns the refusals of a replica, newest first.
	ListPolicyRefusals(ctx context.Context, replica string) ([]PolicyRefusal, error)
	// SavePolicyHistory records that a revision was applied (replacing an
	// earlier record of the same revision). Only the newest
	// MaxPolicyHistory revisions are kept.
	SavePolicyHistory(ctx context.Context, h PolicyHistory) error
	// ListPolicyHistory returns the applied revisions, newest first, at
	// most limit (0 = all kept).
	ListPolicyHistory(ctx context.Context, limit int) ([]PolicyHistory, error)
	// GetPolicyHistory returns the record of an applied revision by its
	// ID, or ErrNotFound.
	GetPolicyHistory(ctx context.Context, id string) (PolicyHistory, error)
	// GetPolicyControl returns the shared suspend and pin state (the zero
	// value when never set).
	GetPolicyControl(ctx context.Context) (PolicyControl, error)
	// SetPolicyControl replaces the shared suspend and pin state and
	// appends audit, in one transaction.
	SetPolicyControl(ctx context.Context, c PolicyControl, audit AuditEvent) error

	// CreateAdminToken stores a named admin token and appends audit in one
	// transaction. ErrConflict when an active (unrevoked) token has the
	// same name, or the id exists.
	CreateAdminToken(ctx context.Context, t AdminToken, audit AuditEvent) error
	// GetAdminToken returns the admin token with this id (revoked or
	// not), or ErrNotFound.
	GetAdminToken(ctx context.Context, id string) (AdminToken, error)
	// ListAdminTokens returns all admin tokens, revoked ones included,
	// newest first.
	ListAdminTokens(ctx context.Context) ([]AdminToken, error)
	// RevokeAdminToken revokes the active admin token named name at `at`
	// and appends audit (its TokenID filled in); it returns the token.
	// ErrNotFound when no active token has that name.
	RevokeAdminToken(ctx context.Context, name string, at time.Time, audit AuditEvent) (AdminToken, error)

	// GetCAState returns the CA rotation state (the zero value, Version 0,
	// when never set).
	GetCAState(ctx context.Context) (CAState, error)
	// SetCAState replaces the CA rotation state, only when its Version is
	// still prev (ErrConflict otherwise: another replica or command changed
	// it), storing s with Version prev+1, and appends audit, in one
	// transaction.
	SetCAState(ctx context.Context, prev int64, s CAState, audit AuditEvent) error
	// CountActiveEnvoysBySerialPrefix counts the active envoys whose
	// certificate serial (lower-case hex) starts with prefix (lower-case
	// hex digits only; "" counts every active envoy).
	CountActiveEnvoysBySerialPrefix(ctx context.Context, prefix string) (int, error)

	// Prune deletes audit events older than before, revoked envoys
	// revoked before before, and nonces expired by now. It returns how many
	// rows went.
	Prune(ctx context.Context, before time.Time) (int64, error)

	// Close releases the database.
	Close() error
}

// Admin roles: what an admin token may do. Every admin route needs one of
// them (server/httpapi checks it in one place).
const (
	// RoleAdmin may do everything the admin API offers.
	RoleAdmin = "admin"
	// RoleReadOnly may read (envoys, tokens without secrets, audit, policy
	// status, version) and ask questions that change nothing (policy
	// explain, and so diff impact and replay), but change nothing: no
	// token, envoy, sync or admin token. Named for what it cannot do, so
	// that whoever hands it to CI knows what they give away.
	RoleReadOnly = "read-only"
)

// AdminToken is a named admin token (va_<id>.<secret>). The secret is
// never stored: only its SHA-256.
type AdminToken struct {
	ID         string
	Name       string
	Role       string // RoleAdmin or RoleReadOnly
	SecretHash []byte
	CreatedAt  time.Time
	RevokedAt  time.Time // zero when active
}

// Envoy statuses.
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
)

// Token is a one-time enrollment token. The secret is never stored: only
// its bcrypt hash.
type Token struct {
	ID         string
	SecretHash []byte
	Pattern    string
	Note       string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	UsedAt     time.Time // zero when unused
	UsedBy     string    // envoy UUID
	RevokedAt  time.Time // zero when not revoked
}

// Envoy is an enrolled host.
type Envoy struct {
	UUID           string
	Hostname       string
	PublicKey      []byte // raw Ed25519 public key (32 bytes)
	CertSerial     string // lower-case hex
	CertNotAfter   time.Time
	OS             string
	Arch           string
	SourceIP       string
	Method         string // trusted | approved | token
	Rule           string
	PolicyRevision string
	TokenID        string
	CreatedAt      time.Time
	Status         string // StatusActive | StatusRevoked

	RevokedAt       time.Time
	RevokedReason   string
	RevokedRevision string // policy revision that revoked it, if any
	ReplacedBy      string // UUID of the envoy that replaced it

	LastSeen     time.Time
	AgentVersion string
	LastAddr     string
	// LastCheckinSigned is the newest signed timestamp of the envoy's
	// recorded check-ins (millisecond precision): after a restart, the
	// check-in service refuses check-ins not newer than it, so that a
	// check-in accepted before cannot be replayed.
	LastCheckinSigned time.Time

	EnvoyFlags
}

// EnvoyFlags are actions the server asks of an envoy at its next check-in.
type EnvoyFlags struct {
	Rebootstrap   bool
	UpdateVersion string // "" = none requested
	// UpdateAllowDowngrade lets the agent install UpdateVersion although it
	// is older than (or cannot be ordered against) the running version:
	// the operator's explicit rollback (vigocli envoys update --allow-downgrade).
	UpdateAllowDowngrade bool
}

// EnvoyFilter selects envoys. Zero fields match everything.
type EnvoyFilter struct {
	Status   string
	Hostname string // exact, lower-case
	Limit    int
	// ChangedSince selects the envoys enrolled, revoked, renewed or given
	// flags at or after this time of the store's clock (check-ins do not
	// count). Replicas use it to refresh their caches with what changed
	// instead of re-reading every envoy. The result is then ordered by that
	// time instead of by creation.
	ChangedSince time.Time
}

// EnvoySort is an order of Store.QueryEnvoys. Every order ends with the
// UUID, so that it is total and a cursor names one position.
type EnvoySort string

// Orders of Store.QueryEnvoys.
const (
	// SortHostname orders by hostname (the default).
	SortHostname EnvoySort = "hostname"
	// SortCreated orders by enrollment time.
	SortCreated EnvoySort = "created"
	// SortSeen orders by the last check-in, or the enrollment time of an
	// envoy that never checked in (see Envoy.Seen).
	SortSeen EnvoySort = "seen"
)

// EnvoyQuery selects envoys for browsing: filters, an order and a page.
// Zero fields match everything. String filters are exact, except Search.
type EnvoyQuery struct {
	Status         string
	Method         string
	Rule           string
	PolicyRevision string
	AgentVersion   string
	// Search selects the hostnames that contain it (hostnames are stored
	// lower-case: give it lower-case).
	Search string
	// SeenBefore selects the envoys not seen since then: whose Seen time
	// is before it. With Status active and the time three check-in
	// intervals ago, these are the stale envoys.
	SeenBefore time.Time

	// Sort is the order (SortHostname when empty); Desc reverses it.
	Sort EnvoySort
	Desc bool
	// After starts the page after this position, Before ends it before
	// this one (the page before; still returned in the query's order). At
	// most one of them is set. Cursor makes a position from an envoy.
	After, Before *EnvoyCursor
	// Limit is the size of the page (0 = no limit).
	Limit int
}

// FleetQuery is what Store.CountFleet counts besides the envoys.
type FleetQuery struct {
	// SeenBefore: an envoy whose Seen time is before it is stale.
	SeenBefore time.Time
	// CertEndsBefore are the horizons of certificate expiry counted.
	CertEndsBefore []time.Time
}

// FleetGroup counts the envoys of one status and agent version ("" for
// an envoy that never checked in).
type FleetGroup struct {
	Status, AgentVersion string
	Envoys               int
	// Stale counts those not seen since FleetQuery.SeenBefore.
	Stale int
	// CertEnding[i] counts those whose certificate ends before
	// FleetQuery.CertEndsBefore[i].
	CertEnding []int
}

// EnvoyCursor is a position in an order of envoys: the sort key of an
// envoy (Hostname for SortHostname, Time for the others) and its UUID.
type EnvoyCursor struct {
	Hostname string
	Time     time.Time
	UUID     string
}

// Cursor returns the position of e in the order of q.
func (q EnvoyQuery) Cursor(e Envoy) EnvoyCursor {
	switch q.Sort {
	case SortCreated:
		return EnvoyCursor{Time: e.CreatedAt, UUID: e.UUID}
	case SortSeen:
		return EnvoyCursor{Time: e.Seen(), UUID: e.UUID}
	default:
		return EnvoyCursor{Hostname: e.Hostname, UUID: e.UUID}
	}
}

// Seen is when the envoy was last heard of: its last check-in, or its
// enrollment when it never checked in.
func (e Envoy) Seen() time.Time {
	if e.LastSeen.IsZero() {
		return e.CreatedAt
	}
	return e.LastSeen
}

// EnrollParams is the input of Store.Enroll.
type EnrollParams struct {
	Envoy   Envoy // Status is set to active by Enroll
	TokenID string
	Force   bool
	// ReplaceReason is the revocation reason of the replaced envoy
	// (default "replaced"; "rebootstrapped" for a rebootstrap).
	ReplaceReason string
	Now           time.Time
	Audit         AuditEvent // EnvoyUUID is filled in by the caller
}

// Revocation revokes envoys by UUID or by active hostname.
type Revocation struct {
	UUID     string
	Hostname string
	Reason   string
	Revision string // policy revision, "" when by an operator
	At       time.Time
	Replica  string
	Actor    string // the operator's admin token name, "" for the policy
}

// RenewParams is the input of Store.RenewCertificate.
type RenewParams struct {
	UUID      string
	OldSerial string
	NewSerial string
	NotAfter  time.Time
	PublicKey []byte // nil keeps the current key
	Audit     AuditEvent
}

// Checkin is one envoy's latest check-in, batched by the gRPC server.
type Checkin struct {
	UUID         string
	At           time.Time // the server's time
	AgentVersion string
	Addr         string
	// Signed is the timestamp the envoy signed (its clock); zero leaves
	// LastCheckinSigned as it is.
	Signed time.Time
}

// AuditEvent is one entry of the audit trail. Secrets never go here: a
// token is named by its id.
type AuditEvent struct {
	ID        int64 // assigned by the store
	At        time.Time
	Type      string // see the Audit* constants
	Result    string // "allowed", "denied", "ok", "rejected"…
	Hostname  string
	SourceIP  string
	Method    string
	Rule      string
	Revision  string
	TokenID   string
	EnvoyUUID string
	Reason    string
	Replica   string
	// Actor names who did it through the admin API: the admin token's
	// name ("admin" for the server's own admin token); "" for the server
	// itself and for registrations.
	Actor   string
	Details map[string]string
}

// AuditQuery selects audit events. Zero fields match everything.
type AuditQuery struct {
	// Types selects events of any of these types.
	Types     []string
	Result    string
	Hostname  string
	EnvoyUUID string
	// Actor selects the events done by this admin token name (see
	// AuditEvent.Actor).
	Actor string
	// Since and Until bound At: Since <= At < Until.
	Since, Until time.Time
	// Before selects events older than this position (the next page),
	// After events newer than it (new events since a page was shown).
	// Positions are in the order At, ID.
	Before, After *AuditCursor
	// Limit is the most events returned (0 = no limit); with After, the
	// newest ones.
	Limit int
}

// AuditCursor is the position of an audit event in the order At, ID.
type AuditCursor struct {
	At time.Time
	ID int64
}

// AuditCount is a number of audit events sharing a type, result, method
// and generalised reason: the reason with the event's own hostname, source
// address and token id replaced by "<host>", "<addr>" and "<token>", so
// that the refusals of many hosts for one cause count together.
type AuditCount struct {
	Type   string
	Result string
	Method string
	Reason string
	Count  int
}

// Audit event types.
const (
	AuditRegistration      = "registration"
	AuditTokenCreated      = "token.created"
	AuditTokenRevoked      = "token.revoked"
	AuditEnvoyRevoked      = "envoy.revoked"
	AuditEnvoyRenewed      = "envoy.renewed"
	AuditEnvoyRebootstrap  = "envoy.rebootstrap_requested"
	AuditEnvoyUpdate       = "envoy.update_requested"
	AuditAdminTokenCreated = "admin_token.created"
	AuditAdminTokenRevoked = "admin_token.revoked"
	// AuditAdminTokenRotated is written when a server sees that its own
	// admin token was rotated (vigosrv admin-token rotate).
	AuditAdminTokenRotated = "admin_token.rotated"
	AuditPolicyApplied     = "policy.applied"
	AuditPolicyRejected    = "policy.rejected"
	// AuditPolicyFetchFailed is written when the policy source could not be
	// fetched after it could (or at the first failure), with the reason.
	AuditPolicyFetchFailed = "policy.fetch_failed"
	// AuditPolicyFetchRecovered is written at the first successful fetch
	// after failures.
	AuditPolicyFetchRecovered = "policy.fetch_recovered"
	// AuditPolicySuspended, AuditPolicyResumed, AuditPolicyPinned and
	// AuditPolicyUnpinned record who changed the shared policy control.
	AuditPolicySuspended = "policy.suspended"
	AuditPolicyResumed   = "policy.resumed"
	AuditPolicyPinned    = "policy.pinned"
	AuditPolicyUnpinned  = "policy.unpinned"
	// AuditConsoleSignIn records a sign-in attempt to the web console
	// (result "ok" or "denied"; never the credential); AuditConsoleSignOut
	// a sign-out.
	AuditConsoleSignIn  = "console.sign_in"
	AuditConsoleSignOut = "console.sign_out"
)

// PolicyRevision is a persisted, valid policy revision.
type PolicyRevision struct {
	ID     string
	Source string
	// Files are the policy files: name relative to the policy folder ->
	// content.
	Files map[string][]byte
	// Spec is the compiled policy (policy.Spec, encoded by
	// policy.MarshalSpec), from which a restart builds the active policy
	// without evaluating the files again; empty for a revision saved by an
	// older server.
	Spec      []byte
	Signer    string
	AppliedAt time.Time
}

// MaxPolicyHistory is the number of applied revisions remembered.
const MaxPolicyHistory = 100

// PolicyHistory is a policy revision that was applied, with its compiled
// form (so that it can be made active again by a pin).
type PolicyHistory struct {
	ID      string
	Name    string // main@sha1:<id>
	Subject string
	Author  string
	Signer  string
	Spec    []byte
	// AppliedAt is when it was last made active, by Replica.
	AppliedAt time.Time
	Replica   string
}

// PolicyControl is the suspend and pin state of the policy, shared by
// every replica.
type PolicyControl struct {
	// Suspended stops applying new revisions (they are still fetched and
	// judged).
	Suspended     bool
	SuspendReason string
	SuspendedBy   string
	SuspendedAt   time.Time
	// Pinned is a revision made active on purpose; new revisions are
	// judged but not applied while it is set.
	Pinned    string
	PinReason string
	PinnedBy  string
	PinnedAt  time.Time
}

// MaxPolicyRefusals is the number of refused revisions remembered per replica.
const MaxPolicyRefusals = 100

// PolicyRefusal is a policy revision that a replica refused.
type PolicyRefusal struct {
	Replica  string
	Revision string
	// Kind is the kind of refusal: "invalid", "verify" or "budget".
	Kind string
	// Limits are the evaluation limits in force, such as "256 MiB, 10s":
	// a refusal for exceeding them holds only under the same limits.
	Limits string
	// Errors are the problems, as JSON written and read by the policy
	// controller.
	Errors string
	At     time.Time
}
