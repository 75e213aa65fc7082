package sqlitestore

// migrations are the schema versions, in order. Version i+1 is
// migrations[i]. A migration, once released, is never edited: a change to
// the schema is a new entry at the end.
//
// Times are INTEGER unix milliseconds (UTC by definition); a NULL time is
// the zero time.Time. Tables are STRICT so that a wrongly typed value is an
// error instead of being silently stored.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE tokens (
	id          TEXT    NOT NULL PRIMARY KEY,
	secret_hash BLOB    NOT NULL,
	pattern     TEXT    NOT NULL,
	note        TEXT    NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	used_at     INTEGER,
	used_by     TEXT    NOT NULL DEFAULT '',
	revoked_at  INTEGER
) STRICT;
CREATE INDEX tokens_created_at ON tokens (created_at);

CREATE TABLE envoys (
	uuid             TEXT    NOT NULL PRIMARY KEY,
	hostname         TEXT    NOT NULL,
	public_key       BLOB    NOT NULL,
	cert_serial      TEXT    NOT NULL DEFAULT '',
	cert_not_after   INTEGER,
	os               TEXT    NOT NULL DEFAULT '',
	arch             TEXT    NOT NULL DEFAULT '',
	source_ip        TEXT    NOT NULL DEFAULT '',
	method           TEXT    NOT NULL DEFAULT '',
	rule             TEXT    NOT NULL DEFAULT '',
	policy_revision  TEXT    NOT NULL DEFAULT '',
	token_id         TEXT    NOT NULL DEFAULT '',
	created_at       INTEGER NOT NULL,
	status           TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
	revoked_at       INTEGER,
	revoked_reason   TEXT    NOT NULL DEFAULT '',
	revoked_revision TEXT    NOT NULL DEFAULT '',
	replaced_by      TEXT    NOT NULL DEFAULT '',
	last_seen        INTEGER,
	agent_version    TEXT    NOT NULL DEFAULT '',
	last_addr        TEXT    NOT NULL DEFAULT '',
	rebootstrap      INTEGER NOT NULL DEFAULT 0,
	update_version   TEXT    NOT NULL DEFAULT ''
) STRICT;
-- At most one active envoy per hostname, enforced by the database so that
-- it holds across processes.
CREATE UNIQUE INDEX envoys_active_hostname ON envoys (hostname) WHERE status = 'active';
CREATE INDEX envoys_hostname ON envoys (hostname, created_at, uuid);
CREATE INDEX envoys_created ON envoys (created_at, uuid);
CREATE INDEX envoys_status_created ON envoys (status, created_at, uuid);
CREATE INDEX envoys_revoked_at ON envoys (revoked_at) WHERE status = 'revoked';

-- Revoked is terminal: no update may bring a revoked envoy back.
CREATE TRIGGER envoys_revoked_is_terminal
BEFORE UPDATE OF status ON envoys
WHEN OLD.status = 'revoked' AND NEW.status <> 'revoked'
BEGIN
	SELECT RAISE(ABORT, 'a revoked envoy cannot become active again');
END;

-- UUIDs of revoked envoys removed by Prune, so that such a UUID cannot be
-- enrolled again either.
CREATE TABLE retired_envoys (
	uuid TEXT NOT NULL PRIMARY KEY
) STRICT;
CREATE TRIGGER envoys_uuid_not_retired
BEFORE INSERT ON envoys
WHEN EXISTS (SELECT 1 FROM retired_envoys WHERE uuid = NEW.uuid)
BEGIN
	SELECT RAISE(ABORT, 'the uuid of a revoked envoy cannot be reused');
END;

CREATE TABLE audit (
	id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	at         INTEGER NOT NULL,
	type       TEXT    NOT NULL,
	result     TEXT    NOT NULL DEFAULT '',
	hostname   TEXT    NOT NULL DEFAULT '',
	source_ip  TEXT    NOT NULL DEFAULT '',
	method     TEXT    NOT NULL DEFAULT '',
	rule       TEXT    NOT NULL DEFAULT '',
	revision   TEXT    NOT NULL DEFAULT '',
	token_id   TEXT    NOT NULL DEFAULT '',
	envoy_uuid TEXT    NOT NULL DEFAULT '',
	reason     TEXT    NOT NULL DEFAULT '',
	replica    TEXT    NOT NULL DEFAULT '',
	details    TEXT -- JSON object of strings, NULL when empty
) STRICT;
CREATE INDEX audit_at ON audit (at, id);

-- The last good policy revision: at most one row.
CREATE TABLE policy_revision (
	singleton  INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
	id         TEXT    NOT NULL,
	source     TEXT    NOT NULL DEFAULT '',
	files      TEXT    NOT NULL, -- JSON object: path -> base64 content
	signer     TEXT    NOT NULL DEFAULT '',
	applied_at INTEGER
) STRICT;

-- Check-in nonces seen, for replay protection.
CREATE TABLE nonces (
	envoy_uuid TEXT    NOT NULL,
	nonce      BLOB    NOT NULL,
	expires_at INTEGER NOT NULL,
	PRIMARY KEY (envoy_uuid, nonce)
) STRICT, WITHOUT ROWID;
CREATE INDEX nonces_expires_at ON nonces (expires_at);
`,
	// 2: when an envoy last changed (enrolled, revoked, renewed, flags set;
	// not check-ins), so that replicas refresh their caches with the
	// envoys that changed rather than with all of them.
	`
ALTER TABLE envoys ADD COLUMN changed_at INTEGER NOT NULL DEFAULT 0;
UPDATE envoys SET changed_at = MAX(created_at, COALESCE(revoked_at, 0));
CREATE INDEX envoys_changed_at ON envoys (changed_at, uuid);
`,
	// 3: the compiled form of the last good policy revision, so that a
	// restart never evaluates policy content again, and the revisions each
	// replica refused.
	`
ALTER TABLE policy_revision ADD COLUMN spec BLOB NOT NULL DEFAULT x'';
CREATE TABLE policy_refusals (
	replica  TEXT    NOT NULL,
	revision TEXT    NOT NULL,
	kind     TEXT    NOT NULL,
	limits   TEXT    NOT NULL DEFAULT '',
	errors   TEXT    NOT NULL,
	at       INTEGER NOT NULL,
	PRIMARY KEY (replica, revision)
) STRICT;
CREATE INDEX policy_refusals_at ON policy_refusals (replica, at);
`,
	// 4: the revisions applied (compiled, for pins) and the shared
	// suspend and pin state.
	`
CREATE TABLE policy_history (
	id         TEXT    NOT NULL PRIMARY KEY,
	name       TEXT    NOT NULL DEFAULT '',
	subject    TEXT    NOT NULL DEFAULT '',
	author     TEXT    NOT NULL DEFAULT '',
	signer     TEXT    NOT NULL DEFAULT '',
	spec       BLOB    NOT NULL,
	applied_at INTEGER NOT NULL,
	replica    TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX policy_history_applied_at ON policy_history (applied_at);
CREATE TABLE policy_control (
	singleton      INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
	suspended      INTEGER NOT NULL DEFAULT 0,
	suspend_reason TEXT    NOT NULL DEFAULT '',
	suspended_by   TEXT    NOT NULL DEFAULT '',
	suspended_at   INTEGER,
	pinned         TEXT    NOT NULL DEFAULT '',
	pin_reason     TEXT    NOT NULL DEFAULT '',
	pinned_by      TEXT    NOT NULL DEFAULT '',
	pinned_at      INTEGER
) STRICT;
`,
	// 5: the newest signed timestamp of each envoy's recorded check-ins,
	// so that a check-in cannot be replayed after a restart.
	`
ALTER TABLE envoys ADD COLUMN last_checkin_signed INTEGER;
`,
	// 6: the operator's consent to an agent downgrade that goes with
	// update_version (vigocli envoys update --allow-downgrade).
	`
ALTER TABLE envoys ADD COLUMN update_allow_downgrade INTEGER NOT NULL DEFAULT 0;
`,
	// 7: audit events of one type, newest first (the registrations that
	// "vigocli policy diff --replay" reads back in time).
	`
CREATE INDEX audit_type_id ON audit (type, id);
`,
	// 8: named admin tokens with roles, and who did what through the admin
	// API (the token's name) in the audit log.
	`
CREATE TABLE admin_tokens (
	id          TEXT    NOT NULL PRIMARY KEY,
	name        TEXT    NOT NULL,
	role        TEXT    NOT NULL CHECK (role IN ('admin', 'read-only')),
	secret_hash BLOB    NOT NULL,
	created_at  INTEGER NOT NULL,
	revoked_at  INTEGER
) STRICT;
-- One active token per name; revoked ones stay for the audit trail.
CREATE UNIQUE INDEX admin_tokens_active_name ON admin_tokens (name) WHERE revoked_at IS NULL;
ALTER TABLE audit ADD COLUMN actor TEXT NOT NULL DEFAULT '';
`,
	// 9: browsing (QueryEnvoys, QueryAudit): the orders by hostname, with
	// and without a status, and by when an envoy was last seen (which also
	// serves "not seen since": stale envoys), and newest-first audit by
	// type, hostname and envoy. The seen index costs every check-in an
	// index update (about 1 µs of the 5 µs a recorded check-in takes); with
	// 100,000 envoys a stale count or a page by last seen would otherwise
	// read the whole table (40-50 ms).
	`
CREATE INDEX envoys_hostname_uuid ON envoys (hostname, uuid);
CREATE INDEX envoys_status_hostname ON envoys (status, hostname, uuid);
CREATE INDEX envoys_seen ON envoys (COALESCE(last_seen, created_at), uuid);
CREATE INDEX audit_type_at ON audit (type, at, id);
CREATE INDEX audit_hostname_at ON audit (hostname, at, id);
CREATE INDEX audit_envoy_at ON audit (envoy_uuid, at, id);
`,
	// 10: the CA rotation state shared by every replica (certificates and
	// phase; the CA keys stay in files in the data folder).
	`
CREATE TABLE ca_state (
	singleton   INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
	phase       TEXT    NOT NULL CHECK (phase IN ('', 'prepared', 'active')),
	current_pem BLOB    NOT NULL,
	next_pem    BLOB    NOT NULL,
	version     INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL
) STRICT;
`,
}
