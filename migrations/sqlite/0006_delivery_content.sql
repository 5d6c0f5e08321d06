-- Each queued notification keeps the summary and details of the moment it was queued, so that a
-- "firing" message delivered late (after an outage of its sink) still says what fired, even if
-- the incident has resolved since and the alert row now holds the "resolved" text.
-- NULL for rows queued before this migration: they fall back to the alert row's text.
ALTER TABLE deliveries ADD COLUMN summary TEXT;
ALTER TABLE deliveries ADD COLUMN details TEXT;
-- The claim of one sink's deliveries (the outbox worker runs one loop per sink).
CREATE INDEX deliveries_sink_pending ON deliveries (sink, next_attempt_at, id) WHERE state = 'pending';
