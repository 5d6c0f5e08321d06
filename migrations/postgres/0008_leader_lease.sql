-- Several instances on one PostgreSQL store: one leader acts, the others stand by.
--
-- The leader holds the row `leader` of leader_lease until expires_at (Unix ms, the database's own
-- clock, so hosts' clocks never matter) and renews it; `fence` grows by one every time the lease
-- changes hands or is taken again after it expired.
--
-- Fencing: each daemon connection carries its fencing token in the session setting
-- `vault_steward.fence` (set by the pool on every connection it hands out; "0" on a standby). A
-- statement-level trigger on every table a leader writes refuses the statement unless that token
-- is the lease's current one, reading the lease row FOR SHARE: a takeover (an UPDATE of that row)
-- waits for the writes in flight, and once it has committed no write with the old token can
-- commit — whatever the deposed leader was doing when it paused or lost its network.
-- Connections without the setting (the CLI commands: rotate, …) are not fenced: they are not
-- leaders, and they serialise with the leader through the per-job lock instead.
-- A table added later that a leader writes must get the same trigger.

CREATE TABLE leader_lease (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    fence      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE FUNCTION vault_steward_check_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    claimed TEXT := current_setting('vault_steward.fence', true);
    current_fence BIGINT;
BEGIN
    IF claimed IS NULL OR claimed = '' THEN
        RETURN NULL;
    END IF;
    SELECT fence INTO current_fence FROM leader_lease WHERE name = 'leader' FOR SHARE;
    IF current_fence IS NULL OR current_fence::TEXT <> claimed THEN
        RAISE EXCEPTION 'vault-steward fencing: token % is not the current leader''s (%)',
            claimed, COALESCE(current_fence::TEXT, 'none')
            USING ERRCODE = 'VSF01';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_states_fence BEFORE INSERT OR UPDATE OR DELETE ON job_states
    FOR EACH STATEMENT EXECUTE FUNCTION vault_steward_check_fence();
CREATE TRIGGER runs_fence BEFORE INSERT OR UPDATE OR DELETE ON runs
    FOR EACH STATEMENT EXECUTE FUNCTION vault_steward_check_fence();
CREATE TRIGGER job_locks_fence BEFORE INSERT OR UPDATE OR DELETE ON job_locks
    FOR EACH STATEMENT EXECUTE FUNCTION vault_steward_check_fence();
CREATE TRIGGER rotations_fence BEFORE INSERT OR UPDATE OR DELETE ON rotations
    FOR EACH STATEMENT EXECUTE FUNCTION vault_steward_check_fence();
CREATE TRIGGER snapshots_fence BEFORE INSERT OR UPDATE OR DELETE ON snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION vault_steward_check_fence();
CREATE TRIGGER actions_fence BEFORE INSERT OR UPDATE OR DELETE ON actions
    FOR EACH STATEMENT EXECUTE FUNCTION vault_steward_check_fence();
CREATE TRIGGER alerts_fence BEFORE INSERT OR UPDATE OR DELETE ON alerts
    FOR EACH STATEMENT EXECUTE FUNCTION vault_steward_check_fence();
CREATE TRIGGER deliveries_fence BEFORE INSERT OR UPDATE OR DELETE ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION vault_steward_check_fence();
