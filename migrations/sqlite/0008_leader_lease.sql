-- The leader lease of several instances on one PostgreSQL store (see ../postgres/0008). A SQLite
-- store serves one daemon only (a second one on the file is refused), so nothing here elects or
-- fences; the table exists so that both schemas keep the same shape.
CREATE TABLE leader_lease (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    fence      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
