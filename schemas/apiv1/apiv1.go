// Package apiv1 holds the JSON wire types of the server's HTTPS API
// (/api/v1/...). The agent and vigocli share them with the server; nothing
// else is shared between the agent and the server.
package apiv1

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Headers of every authenticated admin answer: the server's build
// (buildinfo.Info's Version and Commit; the commit only when known), so
// that vigocli can warn when it is another build.
const (
	HeaderServerVersion = "Vigo-Server-Version"
	HeaderServerCommit  = "Vigo-Server-Commit"
)

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// RegisterRequest is the body of POST /api/v1/bootstrap/register, sent
// with Content-Type: application/json (other types are refused with 415).
// The server bounds every field (400 beyond): hostname 253 bytes, os and
// arch 32, public_key 1 KiB, csr 4 KiB, token 128, previous_uuid a UUID,
// previous_signature 128.
type RegisterRequest struct {
	Hostname  string `json:"hostname"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	PublicKey string `json:"public_key"` // PEM "PUBLIC KEY", PKIX Ed25519
	CSR       string `json:"csr"`        // PEM "CERTIFICATE REQUEST", signed by PublicKey, CN = Hostname
	Token     string `json:"token,omitempty"`
	Force     bool   `json:"force,omitempty"`
	// PreviousUUID and PreviousSignature are set when an envoy re-registers
	// because the server asked it to rebootstrap: they prove that the
	// caller holds the old identity's key. PreviousSignature is the base64
	// (standard, padded) Ed25519 signature by the old envoy key over
	// RebootstrapSigningBytes(PreviousUUID, Hostname, PublicKey). The
	// server then revokes the old UUID with reason "rebootstrapped".
	PreviousUUID      string `json:"previous_uuid,omitempty"`
	PreviousSignature string `json:"previous_signature,omitempty"`
}

// RebootstrapSigningBytes returns the bytes an envoy signs with its old key
// to prove its previous identity in a RegisterRequest: the context string
// "vigo-rebootstrap-v1\n", then previousUUID, hostname and publicKeyPEM
// (the new key, exactly as sent), each as a 4-byte big-endian length
// followed by the bytes.
func RebootstrapSigningBytes(previousUUID, hostname, publicKeyPEM string) []byte {
	b := []byte("vigo-rebootstrap-v1\n")
	for _, s := range []string{previousUUID, hostname, publicKeyPEM} {
		n := len(s)
		b = append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		b = append(b, s...)
	}
	return b
}

// RegisterResponse is the answer to a successful registration.
type RegisterResponse struct {
	UUID            string   `json:"uuid"`
	Hostname        string   `json:"hostname"`
	Certificate     string   `json:"certificate"` // PEM
	CA              string   `json:"ca"`          // PEM
	GRPCAddress     string   `json:"grpc_address"`
	CheckinInterval string   `json:"checkin_interval"`      // Go duration, e.g. "1m0s"
	ServerPublicKey string   `json:"server_public_key"`     // PEM, Ed25519 key that signs check-in responses
	SigningKey      string   `json:"signing_key,omitempty"` // PEM, Ed25519 key of the offline agent signing key, when configured
	Method          string   `json:"method"`
	Rule            string   `json:"rule"`
	PolicyRevision  string   `json:"policy_revision"`
	Replaced        []string `json:"replaced,omitempty"` // UUIDs of envoys revoked as replaced
}

// AgentLatest is the answer of GET /api/v1/agent/latest?os=&arch=.
type AgentLatest struct {
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	Version   string `json:"version"`
	SHA256    string `json:"sha256"`
	Size      int64  `json:"size"`
	Signature string `json:"signature,omitempty"` // base64 Ed25519 signature of agentbuild.Statement(version, os, arch, sha256)
	URL       string `json:"url"`
}

// AgentSelf is the answer of GET /api/v1/agent/self, asked over HTTPS with
// the envoy's client certificate after the gRPC handshake refused it: a TLS
// alert carries no reason, this does.
type AgentSelf struct {
	UUID     string `json:"uuid"`
	Accepted bool   `json:"accepted"`
	Message  string `json:"message"` // e.g. "envoy 1b4e… is revoked: decommissioned (policy 3f2a9c1)"
}

// TokenCreateRequest is the body of POST /api/v1/tokens.
type TokenCreateRequest struct {
	Pattern string `json:"pattern"`
	TTL     string `json:"ttl,omitempty"` // Go duration; default 24h, capped by policy tokens.max_ttl
	Note    string `json:"note,omitempty"`
}

// TokenCreated is the answer of POST /api/v1/tokens: the only time the
// secret is shown.
type TokenCreated struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	Pattern   string    `json:"pattern"`
	Note      string    `json:"note,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	Command   string    `json:"command"` // the ready one-liner
}

// Token describes a token without its secret.
type Token struct {
	ID        string     `json:"id"`
	Pattern   string     `json:"pattern"`
	Note      string     `json:"note,omitempty"`
	State     string     `json:"state"` // unused | used | expired | revoked
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	UsedBy    string     `json:"used_by,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Envoy describes an enrolled host.
type Envoy struct {
	UUID            string     `json:"uuid"`
	Hostname        string     `json:"hostname"`
	Status          string     `json:"status"`
	Method          string     `json:"method"`
	Rule            string     `json:"rule"`
	PolicyRevision  string     `json:"policy_revision"`
	SourceIP        string     `json:"source_ip"`
	OS              string     `json:"os"`
	Arch            string     `json:"arch"`
	TokenID         string     `json:"token_id,omitempty"`
	CertSerial      string     `json:"cert_serial"`
	CertNotAfter    time.Time  `json:"cert_not_after"`
	CreatedAt       time.Time  `json:"created_at"`
	LastSeen        *time.Time `json:"last_seen"`
	AgentVersion    string     `json:"agent_version,omitempty"`
	LastAddr        string     `json:"last_addr,omitempty"`
	RevokedAt       *time.Time `json:"revoked_at,omitempty"`
	RevokedReason   string     `json:"revoked_reason,omitempty"`
	RevokedRevision string     `json:"revoked_revision,omitempty"`
	ReplacedBy      string     `json:"replaced_by,omitempty"`
	Rebootstrap     bool       `json:"rebootstrap_pending,omitempty"`
	UpdateVersion   string     `json:"update_pending,omitempty"`
	// UpdateAllowDowngrade: the pending update may install an older version.
	UpdateAllowDowngrade bool `json:"update_allow_downgrade,omitempty"`
}

// Orders of GET /api/v1/envoys (sort=...; desc=true reverses them). Each
// ends with the UUID, so that an order is total.
const (
	EnvoySortHostname = "hostname"
	EnvoySortCreated  = "created"
	EnvoySortSeen     = "seen" // the last check-in, or the enrollment when none
)

// Cursor is the position of e in the order sort of GET /api/v1/envoys, for
// after=CURSOR: the next page starts after e. The sort key is in it
// ("h" and the hostname, or "t" and Unix nanoseconds), then the UUID.
func (e Envoy) Cursor(sort string) string {
	key := "h" + e.Hostname
	switch sort {
	case EnvoySortCreated:
		key = "t" + strconv.FormatInt(e.CreatedAt.UnixNano(), 10)
	case EnvoySortSeen:
		seen := e.CreatedAt
		if e.LastSeen != nil && !e.LastSeen.IsZero() {
			seen = *e.LastSeen
		}
		key = "t" + strconv.FormatInt(seen.UnixNano(), 10)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(key + "\n" + e.UUID))
}

// ParseEnvoyCursor reads a Cursor made for the order sort: the hostname
// (sort hostname) or the time (the others), and the UUID.
func ParseEnvoyCursor(s, sort string) (hostname string, at time.Time, uuid string, err error) {
	bad := errors.New("not an envoy cursor of this order (the cursor of the last envoy of a page, with the same sort)")
	b, derr := base64.RawURLEncoding.DecodeString(s)
	key, uuid, ok := strings.Cut(string(b), "\n")
	if derr != nil || len(s) > 1024 || !ok || key == "" || uuid == "" {
		return "", time.Time{}, "", bad
	}
	timed := sort == EnvoySortCreated || sort == EnvoySortSeen
	switch {
	case key[0] == 'h' && !timed:
		return key[1:], time.Time{}, uuid, nil
	case key[0] == 't' && timed:
		ns, perr := strconv.ParseInt(key[1:], 10, 64)
		if perr != nil {
			return "", time.Time{}, "", bad
		}
		return "", time.Unix(0, ns).UTC(), uuid, nil
	}
	return "", time.Time{}, "", bad
}

// EnvoyRevokeRequest is the body of POST /api/v1/envoys/{id}/revoke.
type EnvoyRevokeRequest struct {
	Reason string `json:"reason"`
}

// EnvoyUpdateRequest is the body of POST /api/v1/envoys/{id}/update.
type EnvoyUpdateRequest struct {
	Version string `json:"version"`
	// AllowDowngrade lets the agent install Version although it is older
	// than the version it runs (or cannot be ordered against it); agents
	// refuse such a build otherwise, however validly signed.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
}

// AuditEvent is one audit entry.
type AuditEvent struct {
	ID        int64     `json:"id"`
	At        time.Time `json:"at"`
	Type      string    `json:"type"`
	Result    string    `json:"result,omitempty"`
	Hostname  string    `json:"hostname,omitempty"`
	SourceIP  string    `json:"source_ip,omitempty"`
	Method    string    `json:"method,omitempty"`
	Rule      string    `json:"rule,omitempty"`
	Revision  string    `json:"revision,omitempty"`
	TokenID   string    `json:"token_id,omitempty"`
	EnvoyUUID string    `json:"envoy_uuid,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Replica   string    `json:"replica,omitempty"`
	// Actor is the name of the admin token that did it ("admin": the
	// server's own); empty for the server itself and registrations.
	Actor   string            `json:"actor,omitempty"`
	Details map[string]string `json:"details,omitempty"`
}

// Cursor is the position of e in the audit log's newest-first order (its
// time, then its id), for GET /api/v1/audit?order=newest&before=CURSOR: the
// next page holds the events older than e.
func (e AuditEvent) Cursor() string {
	return strconv.FormatInt(e.At.UnixNano(), 10) + "." + strconv.FormatInt(e.ID, 10)
}

// ParseAuditCursor reads a Cursor.
func ParseAuditCursor(s string) (at time.Time, id int64, err error) {
	ns, idText, ok := strings.Cut(s, ".")
	n, err1 := strconv.ParseInt(ns, 10, 64)
	id, err2 := strconv.ParseInt(idText, 10, 64)
	if !ok || err1 != nil || err2 != nil || id < 0 {
		return time.Time{}, 0, errors.New("not an audit cursor (the cursor of the last event of a page)")
	}
	return time.Unix(0, n).UTC(), id, nil
}

// AdminTokenCreateRequest is the body of POST /api/v1/admin-tokens.
type AdminTokenCreateRequest struct {
	// Name names the token in audit events; unique among active tokens.
	Name string `json:"name"`
	// Role is "admin" or "read-only" (the default).
	Role string `json:"role,omitempty"`
}

// AdminToken describes a named admin token, never its secret.
type AdminToken struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// AdminTokenCreated is the answer of POST /api/v1/admin-tokens: the only
// time the token is shown.
type AdminTokenCreated struct {
	AdminToken
	Token string `json:"token"`
}

// PolicyError is one error of a policy revision.
type PolicyError struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Path    string `json:"path"`
	Message string `json:"message"`
}

// PolicyStatus is the answer of GET /api/v1/policy/status.
type PolicyStatus struct {
	Replica string `json:"replica"`
	Source  string `json:"source"`
	// Healthy is true when the last fetch of the source succeeded (within
	// three poll intervals) and the last revision attempted was applied.
	Healthy bool `json:"healthy"`
	// Reason says why the status is not healthy, in one line.
	Reason     string         `json:"reason,omitempty"`
	Active     *PolicyActive  `json:"active"`
	Attempted  *PolicyAttempt `json:"attempted"`
	LastFetch  *time.Time     `json:"last_fetch"`
	NextPoll   *time.Time     `json:"next_poll"`
	FetchError string         `json:"fetch_error,omitempty"`
	// Evaluating is the revision being evaluated right now, if any, since
	// EvaluatingSince.
	Evaluating      string     `json:"evaluating,omitempty"`
	EvaluatingSince *time.Time `json:"evaluating_since,omitempty"`
	// EvalLimits is the budget of one evaluation, such as "256 MiB, 10s".
	EvalLimits string `json:"eval_limits,omitempty"`
	// Conditions are Ready, Reconciling and Stalled, as Flux reports them.
	Conditions []Condition `json:"conditions"`
	// Suspended is set while applying new revisions is suspended.
	Suspended *PolicyHold `json:"suspended,omitempty"`
	// Pinned is set while a revision is pinned (made active on purpose).
	Pinned *PolicyHold `json:"pinned,omitempty"`
	// Waiting is the newest valid revision not applied because of a
	// suspension or a pin.
	Waiting *PolicyAttempt `json:"waiting,omitempty"`
}

// Condition is one aspect of the policy source's state, as in Kubernetes
// and Flux: Ready (the newest revision is applied), Reconciling (work is in
// progress), Stalled (nothing will change without a new commit).
type Condition struct {
	Type string `json:"type"`
	// Status is "True", "False" or "Unknown".
	Status string `json:"status"`
	// Reason is a CamelCase code: Succeeded, Progressing, FetchFailed,
	// ValidationFailed, VerificationFailed, BudgetExceeded, EvaluatorFailed,
	// Suspended, Pinned.
	Reason             string    `json:"reason"`
	Message            string    `json:"message"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// Condition types.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
)

// PolicyHold is a suspension or a pin: who set it, when and why.
type PolicyHold struct {
	// Revision is the pinned revision ("" for a suspension).
	Revision string    `json:"revision,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	By       string    `json:"by"`
	At       time.Time `json:"at"`
}

// PolicyControlRequest is the body of POST /api/v1/policy/suspend and
// /api/v1/policy/pin.
type PolicyControlRequest struct {
	Reason   string `json:"reason,omitempty"`
	Revision string `json:"revision,omitempty"` // pin only
}

// PolicyHistoryEntry is an applied revision, as GET /api/v1/policy/history lists them.
type PolicyHistoryEntry struct {
	Revision  string    `json:"revision"`
	Name      string    `json:"name,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Author    string    `json:"author,omitempty"`
	Signer    string    `json:"signer,omitempty"`
	AppliedAt time.Time `json:"applied_at"`
	Replica   string    `json:"replica,omitempty"`
}

// PolicyActive is the active policy revision.
type PolicyActive struct {
	Revision string `json:"revision"`
	// Name is "main@sha1:<revision>" for Git (the revision for a folder).
	Name      string    `json:"name,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Author    string    `json:"author,omitempty"`
	AppliedAt time.Time `json:"applied_at"`
	Signer    string    `json:"signer,omitempty"`
}

// PolicyAttempt is the last revision the server tried to apply.
type PolicyAttempt struct {
	Revision string    `json:"revision"`
	Name     string    `json:"name,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	Author   string    `json:"author,omitempty"`
	At       time.Time `json:"at"`
	Valid    bool      `json:"valid"`
	// Kind says why an invalid revision was refused: "invalid" (its
	// content or file tree), "verify" (its commit signature) or "budget"
	// (its evaluation exceeded the memory or time limit).
	Kind   string        `json:"kind,omitempty"`
	Errors []PolicyError `json:"errors"`
}

// ExplainRequest is the body of POST /api/v1/policy/explain, which
// decides a registration with the server's active policy without
// enrolling; the answer is the decision (allowed, method, rule, reason,
// revision). Token true presents a hypothetical valid token bound to
// TokenPattern (default: the hostname).
type ExplainRequest struct {
	Hostname     string `json:"hostname"`
	IP           string `json:"ip,omitempty"`
	Token        bool   `json:"token,omitempty"`
	TokenPattern string `json:"token_pattern,omitempty"`
}

// PolicySyncResult is the answer of POST /api/v1/policy/sync.
type PolicySyncResult struct {
	Status PolicyStatus `json:"status"`
}
