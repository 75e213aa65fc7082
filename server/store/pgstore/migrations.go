package pgstore

// migrations are the schema versions, in order. Version i+1 is
// migrations[i]. A released migration is never edited: a change to the
// schema is a new entry at the end.
//
// Objects are created unqualified, in the first schema of the connection's
// search_path, so one database can hold several independent stores.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE tokens (
	id          text        NOT NULL PRIMARY KEY,
	secret_hash bytea       NOT NULL,
	pattern     text        NOT NULL,
	note        text        NOT NULL DEFAULT '',
	created_at  timestamptz NOT NULL,
	expires_at  timestamptz NOT NULL,
	used_at     timestamptz,
	used_by     text        NOT NULL DEFAULT '',
	revoked_at  timestamptz
);
CREATE INDEX tokens_created_at ON tokens (created_at);

CREATE TABLE envoys (
	uuid             text        NOT NULL PRIMARY KEY,
	hostname         text        NOT NULL,
	public_key       bytea       NOT NULL,
	cert_serial      text        NOT NULL DEFAULT '',
	cert_not_after   timestamptz,
	os               text        NOT NULL DEFAULT '',
	arch             text        NOT NULL DEFAULT '',
	source_ip        text        NOT NULL DEFAULT '',
	method           text        NOT NULL DEFAULT '',
	rule             text        NOT NULL DEFAULT '',
	policy_revision  text        NOT NULL DEFAULT '',
	token_id         text        NOT NULL DEFAULT '',
	created_at       timestamptz NOT NULL,
	status           text        NOT NULL CHECK (status IN ('active', 'revoked')),
	revoked_at       timestamptz,
	revoked_reason   text        NOT NULL DEFAULT '',
	revoked_revision text        NOT NULL DEFAULT '',
	replaced_by      text        NOT NULL DEFAULT '',
	last_seen        timestamptz,
	agent_version    text        NOT NULL DEFAULT '',
	last_addr        text        NOT NULL DEFAULT '',
	rebootstrap      boolean     NOT NULL DEFAULT false,
	update_version   text        NOT NULL DEFAULT ''
) WITH (fillfactor = 70); -- room for HOT updates: check-ins rewrite every row often
-- At most one active envoy per hostname, across all replicas.
CREATE UNIQUE INDEX envoys_active_hostname ON envoys (hostname) WHERE status = 'active';
CREATE INDEX envoys_hostname ON envoys (hostname, created_at, uuid);
CREATE INDEX envoys_created ON envoys (created_at, uuid);
CREATE INDEX envoys_status_created ON envoys (status, created_at, uuid);
CREATE INDEX envoys_revoked_at ON envoys (revoked_at) WHERE status = 'revoked';

-- Revoked is terminal: no update may bring a revoked envoy back.
CREATE FUNCTION envoys_revoked_is_terminal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF OLD.status = 'revoked' AND NEW.status <> 'revoked' THEN
		RAISE EXCEPTION 'a revoked envoy cannot become active again'
			USING ERRCODE = 'integrity_constraint_violation';
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER envoys_revoked_is_terminal BEFORE UPDATE OF status ON envoys
	FOR EACH ROW EXECUTE FUNCTION envoys_revoked_is_terminal();

-- UUIDs of revoked envoys removed by Prune, so that such a UUID cannot be
-- enrolled again either.
CREATE TABLE retired_envoys (
	uuid text NOT NULL PRIMARY KEY
);
CREATE FUNCTION envoys_uuid_not_retired() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM retired_envoys WHERE uuid = NEW.uuid) THEN
		RAISE EXCEPTION 'the uuid of a revoked envoy cannot be reused'
			USING ERRCODE = 'integrity_constraint_violation';
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER envoys_uuid_not_retired BEFORE INSERT ON envoys
	FOR EACH ROW EXECUTE FUNCTION envoys_uuid_not_retired();

CREATE TABLE audit (
	id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at         timestamptz NOT NULL,
	type       text        NOT NULL,
	result     text        NOT NULL DEFAULT '',
	hostname   text        NOT NULL DEFAULT '',
	source_ip  text        NOT NULL DEFAULT '',
	method     text        NOT NULL DEFAULT '',
	rule       text        NOT NULL DEFAULT '',
	revision   text        NOT NULL DEFAULT '',
	token_id   text        NOT NULL DEFAULT '',
	envoy_uuid text        NOT NULL DEFAULT '',
	reason     text        NOT NULL DEFAULT '',
	replica    text        NOT NULL DEFAULT '',
	details    text        -- JSON object of strings, NULL when empty
);
CREATE INDEX audit_at ON audit (at, id);

-- The last good policy revision: at most one row.
CREATE TABLE policy_revision (
	singleton  integer     NOT NULL PRIMARY KEY CHECK (singleton = 1),
	id         text        NOT NULL,
	source     text        NOT NULL DEFAULT '',
	files      bytea       NOT NULL, -- JSON object: path -> base64 content
	signer     text        NOT NULL DEFAULT '',
	applied_at timestamptz
);

-- Check-in nonces seen, for replay protection across replicas.
CREATE TABLE nonces (
	envoy_uuid text        NOT NULL,
	nonce      bytea       NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (envoy_uuid, nonce)
);
CREATE INDEX nonces_expires_at ON nonces (expires_at);
`,
	// 2: when an envoy last changed (enrolled, revoked, renewed, flags set;
	// not check-ins), so that replicas refresh their caches with the
	// envoys that changed rather than with all of them.
	`
ALTER TABLE envoys ADD COLUMN changed_at timestamptz;
UPDATE envoys SET changed_at = GREATEST(created_at, revoked_at);
ALTER TABLE envoys ALTER COLUMN changed_at SET NOT NULL;
CREATE INDEX envoys_changed_at ON envoys (changed_at, uuid);
`,
	// 3: the compiled form of the last good policy revision, so that a
	// restart never evaluates policy content again, and the revisions each
	// replica refused.
	`
ALTER TABLE policy_revision ADD COLUMN spec bytea NOT NULL DEFAULT ''::bytea;
CREATE TABLE policy_refusals (
	replica  text        NOT NULL,
	revision text        NOT NULL,
	kind     text        NOT NULL,
	limits   text        NOT NULL DEFAULT '',
	errors   text        NOT NULL,
	at       timestamptz NOT NULL,
	PRIMARY KEY (replica, revision)
);
CREATE INDEX policy_refusals_at ON policy_refusals (replica, at);
`,
	// 4: the revisions applied (compiled, for pins) and the shared
	// suspend and pin state.
	`
CREATE TABLE policy_history (
	id         text        NOT NULL PRIMARY KEY,
	name       text        NOT NULL DEFAULT '',
	subject    text        NOT NULL DEFAULT '',
	author     text        NOT NULL DEFAULT '',
	signer     text        NOT NULL DEFAULT '',
	spec       bytea       NOT NULL,
	applied_at timestamptz NOT NULL,
	replica    text        NOT NULL DEFAULT ''
);
CREATE INDEX policy_history_applied_at ON policy_history (applied_at);
CREATE TABLE policy_control (
	singleton      integer     NOT NULL PRIMARY KEY CHECK (singleton = 1),
	suspended      boolean     NOT NULL DEFAULT false,
	suspend_reason text        NOT NULL DEFAULT '',
	suspended_by   text        NOT NULL DEFAULT '',
	suspended_at   timestamptz,
	pinned         text        NOT NULL DEFAULT '',
	pin_reason     text        NOT NULL DEFAULT '',
	pinned_by      text        NOT NULL DEFAULT '',
	pinned_at      timestamptz
);
`,
	// 5: the newest signed timestamp of each envoy's recorded check-ins,
	// so that a check-in cannot be replayed after a restart.
	`
ALTER TABLE envoys ADD COLUMN last_checkin_signed timestamptz;
`,
	// 6: the operator's consent to an agent downgrade that goes with
	// update_version (vigocli envoys update --allow-downgrade).
	`
ALTER TABLE envoys ADD COLUMN update_allow_downgrade boolean NOT NULL DEFAULT false;
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
	id          text        NOT NULL PRIMARY KEY,
	name        text        NOT NULL,
	role        text        NOT NULL CHECK (role IN ('admin', 'read-only')),
	secret_hash bytea       NOT NULL,
	created_at  timestamptz NOT NULL,
	revoked_at  timestamptz
);
-- One active token per name; revoked ones stay for the audit trail.
CREATE UNIQUE INDEX admin_tokens_active_name ON admin_tokens (name) WHERE revoked_at IS NULL;
ALTER TABLE audit ADD COLUMN actor text NOT NULL DEFAULT '';
`,
	// 9: browsing (QueryEnvoys, QueryAudit): the orders by hostname, with
	// and without a status, and newest-first audit by type, hostname and
	// envoy. Unlike SQLite, no index on last_seen: check-ins rewrite it
	// all the time, and an indexed column would end their HOT updates (a
	// sequential scan of 100,000 rows is cheap here).
	`
CREATE INDEX envoys_hostname_uuid ON envoys (hostname, uuid);
CREATE INDEX envoys_status_hostname ON envoys (status, hostname, uuid);
CREATE INDEX audit_type_at ON audit (type, at, id);
CREATE INDEX audit_hostname_at ON audit (hostname, at, id);
CREATE INDEX audit_envoy_at ON audit (envoy_uuid, at, id);
`,
	// 10: the CA rotation state shared by every replica (certificates and
	// phase; the CA keys stay in files in each replica's data folder).
	`
CREATE TABLE ca_state (
	singleton   integer     NOT NULL PRIMARY KEY CHECK (singleton = 1),
	phase       text        NOT NULL CHECK (phase IN ('', 'prepared', 'active')),
	current_pem bytea       NOT NULL,
	next_pem    bytea       NOT NULL,
	version     bigint      NOT NULL,
	updated_at  timestamptz NOT NULL
);
`,
}
