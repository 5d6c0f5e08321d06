-- vault-steward state store, SQLite flavour. Keep in step with ../postgres/0001_init.sql: the
-- queries in src/store/queries.rs run unchanged on both.
-- Times are Unix milliseconds (INTEGER). Enums are their lower-case text. No column holds a secret
-- value: only identifiers, versions, times and scrubbed texts.

CREATE TABLE job_states (
    job                  TEXT PRIMARY KEY NOT NULL,
    kind                 TEXT NOT NULL,
    last_run_at          INTEGER,
    last_success_at      INTEGER,
    last_outcome         TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    secret_changed_at    INTEGER,
    secret_version       INTEGER,
    retry_at             INTEGER,
    last_error           TEXT
);

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job          TEXT NOT NULL,
    kind         TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    outcome      TEXT,
    detail       TEXT,
    error        TEXT
);
CREATE INDEX runs_job_started ON runs (job, started_at DESC, id DESC);
CREATE INDEX runs_unfinished ON runs (started_at) WHERE finished_at IS NULL;

CREATE TABLE job_locks (
    job         TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE rotations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    step       TEXT NOT NULL,
    status     TEXT NOT NULL,
    detail     TEXT,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX rotations_open ON rotations (job, id) WHERE status = 'open';

CREATE TABLE snapshots (
    job         TEXT NOT NULL,
    destination TEXT NOT NULL,
    object_key  TEXT NOT NULL,
    taken_at    INTEGER NOT NULL,
    size_bytes  INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    raft_index  INTEGER,
    raft_term   INTEGER,
    PRIMARY KEY (job, destination, object_key)
);
CREATE INDEX snapshots_job_taken ON snapshots (job, taken_at DESC);

CREATE TABLE actions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job        TEXT NOT NULL,
    action     TEXT NOT NULL,
    payload    TEXT NOT NULL,
    due_at     INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    done_at    INTEGER
);
CREATE INDEX actions_undone ON actions (due_at, id) WHERE done_at IS NULL;

CREATE TABLE alerts (
    fingerprint      TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    job              TEXT NOT NULL,
    severity         TEXT NOT NULL,
    status           TEXT NOT NULL,
    summary          TEXT NOT NULL,
    details          TEXT NOT NULL,
    started_at       INTEGER NOT NULL,
    resolved_at      INTEGER,
    last_notified_at INTEGER
);
CREATE INDEX alerts_firing ON alerts (started_at) WHERE status = 'firing';

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint     TEXT NOT NULL REFERENCES alerts (fingerprint) ON DELETE CASCADE,
    sink            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    claimed_by      TEXT,
    lease_until     INTEGER
);
CREATE INDEX deliveries_pending ON deliveries (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX deliveries_fingerprint ON deliveries (fingerprint, id);
