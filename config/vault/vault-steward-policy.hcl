# vault-steward-policy.hcl - the smallest Vault / OpenBao policy the shipped example jobs need
# (jobs/*.toml). Load it and give it to the daemon's AppRole (see README "Running it"):
#
#   vault policy write vault-steward config/vault/vault-steward-policy.hcl
#
# It stands on its own: the daemon works with a token that has only this policy (an AppRole with
# token_no_default_policy=true), which tests/policy.rs proves by running every example job with
# exactly that token. Every path is spelt out; there is no wildcard. When you add or rename a job,
# add its paths here the same way. KV v2 paths are API paths: `secret/data/…` for the secret's
# versions, `secret/metadata/…` for its metadata (the job files write `secret/…`).
#
# AppRole login (auth/approle/login) needs no policy. vault-health jobs need none either:
# sys/health, sys/seal-status and sys/leader answer without a token.

# ---- the daemon itself -------------------------------------------------------------------------

# Token start-up lookup (TTL, renewability) and renewal at two thirds of the TTL.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Jobs prove their permissions before changing anything (and `check --connect` without changing
# anything): api-key, approle-secret-id, postgres, mysql and raft-snapshot jobs.
path "sys/capabilities-self" {
  capabilities = ["update"]
}

# ---- api-key (jobs/api-key.toml) ---------------------------------------------------------------
# A rotation reads the current version, writes a new one with check-and-set (create when the
# secret does not exist yet, update after) and merges rotated_by/rotation_job/rotated_at into the
# secret's custom_metadata.

# api-key-default
path "secret/data/api-key/default" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/api-key/default" {
  capabilities = ["read", "update"]
}

# billing-service-key (its on_rotate hook is an HTTP POST to the service, not a Vault call)
path "secret/data/service/billing/credentials" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/service/billing/credentials" {
  capabilities = ["read", "update"]
}

# ---- approle-secret-id (jobs/approle-secret-id.toml) -------------------------------------------

# billing-approle: read the role-id, issue secret-ids (list them when rolling a crashed rotation
# forward), look one up (a secret-id put in KV by hand), destroy the previous one after `grace`.
path "auth/approle/role/billing/role-id" {
  capabilities = ["read"]
}
path "auth/approle/role/billing/secret-id" {
  capabilities = ["update", "list"]
}
path "auth/approle/role/billing/secret-id/lookup" {
  capabilities = ["update"]
}
path "auth/approle/role/billing/secret-id-accessor/lookup" {
  capabilities = ["update"]
}
path "auth/approle/role/billing/secret-id-accessor/destroy" {
  capabilities = ["update"]
}
# billing-approle: where the billing service reads role_id and secret_id.
path "secret/data/service/billing/credentials-approle" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/service/billing/credentials-approle" {
  capabilities = ["read", "update"]
}

# ---- reminder (jobs/reminder.toml) -------------------------------------------------------------
# llm-openai, llm-anthropic, llm-openrouter: only the age of the current version, from the
# metadata; never the key itself.

path "secret/metadata/llm-api-key/openai" {
  capabilities = ["read"]
}
path "secret/metadata/llm-api-key/anthropic" {
  capabilities = ["read"]
}
path "secret/metadata/llm-api-key/openrouter" {
  capabilities = ["read"]
}

# ---- postgres and mysql (jobs/postgres.toml, jobs/mysql.toml) ----------------------------------
# Per job: the consumers' secret (read, then a check-and-set write and the rotation metadata),
# the admin login (read only), and the job's pending path, where the new password waits while a
# rotation is in flight (written, read back, and deleted with all its versions at the end).

# orders-db (postgres)
path "secret/data/database/orders" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/database/orders" {
  capabilities = ["read", "update"]
}
path "secret/data/database/orders-admin" {
  capabilities = ["read"]
}
path "secret/data/vault-steward/pending/orders-db" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/vault-steward/pending/orders-db" {
  capabilities = ["read", "delete"]
}

# billing-db (postgres, alternating)
path "secret/data/database/billing" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/database/billing" {
  capabilities = ["read", "update"]
}
path "secret/data/database/billing-admin" {
  capabilities = ["read"]
}
path "secret/data/vault-steward/pending/billing-db" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/vault-steward/pending/billing-db" {
  capabilities = ["read", "delete"]
}

# shop-db (mysql, alternating)
path "secret/data/database/shop" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/database/shop" {
  capabilities = ["read", "update"]
}
path "secret/data/database/shop-admin" {
  capabilities = ["read"]
}
path "secret/data/vault-steward/pending/shop-db" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/vault-steward/pending/shop-db" {
  capabilities = ["read", "delete"]
}

# ---- raft-snapshot (jobs/raft-snapshot.toml) ---------------------------------------------------

# vault-snapshots: stream the snapshot. (`restore` writes to sys/storage/raft/snapshot[-force],
# which this policy does not allow: give it its own config with an operator token.)
path "sys/storage/raft/snapshot" {
  capabilities = ["read"]
}
