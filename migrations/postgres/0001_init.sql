-- vault-steward state store, PostgreSQL flavour. Keep in step with ../sqlite/0001_init.sql: the
-- queries in src/store/queries.rs run unchanged on both.
-- Times are Unix milliseconds (BIGINT). Enums are their lower-case text. No column holds a secret
-- value: only identifiers, versions, times and scrubbed texts.

CREATE TABLE job_states (
    job                  TEXT PRIMARY KEY NOT NULL,
    kind                 TEXT NOT NULL,
    last_run_at          BIGINT,
    last_success_at      BIGINT,
    last_outcome         TEXT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    secret_changed_at    BIGINT,
    secret_version       BIGINT,
    retry_at             BIGINT,
    last_error           TEXT
);

CREATE TABLE runs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job          TEXT NOT NULL,
    kind         TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    outcome      TEXT,
    detail       TEXT,
    error        TEXT
);
CREATE INDEX runs_job_started ON runs (job, started_at DESC, id DESC);
CREATE INDEX runs_unfinished ON runs (started_at) WHERE finished_at IS NULL;

CREATE TABLE job_locks (
    job         TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE rotations (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    step       TEXT NOT NULL,
    status     TEXT NOT NULL,
    detail     TEXT,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX rotations_open ON rotations (job, id) WHERE status = 'open';

CREATE TABLE snapshots (
    job         TEXT NOT NULL,
    destination TEXT NOT NULL,
    object_key  TEXT NOT NULL,
    taken_at    BIGINT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    raft_index  BIGINT,
    raft_term   BIGINT,
    PRIMARY KEY (job, destination, object_key)
);
CREATE INDEX snapshots_job_taken ON snapshots (job, taken_at DESC);

CREATE TABLE actions (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job        TEXT NOT NULL,
    action     TEXT NOT NULL,
    payload    TEXT NOT NULL,
    due_at     BIGINT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    done_at    BIGINT
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
    started_at       BIGINT NOT NULL,
    resolved_at      BIGINT,
    last_notified_at BIGINT
);
CREATE INDEX alerts_firing ON alerts (started_at) WHERE status = 'firing';

CREATE TABLE deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint     TEXT NOT NULL REFERENCES alerts (fingerprint) ON DELETE CASCADE,
    sink            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    claimed_by      TEXT,
    lease_until     BIGINT
);
CREATE INDEX deliveries_pending ON deliveries (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX deliveries_fingerprint ON deliveries (fingerprint, id);
