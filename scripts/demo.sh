#!/usr/bin/env bash
# demo.sh - see vault-steward work in a minute, on a fresh machine.
#
#   scripts/demo.sh            (Ctrl-C stops the daemon and everything the demo started)
#
# Brings up a local OpenBao (raft), S3 (moto), SMTP (aiosmtpd) and PostgreSQL through
# scripts/testbed.sh (a state dir and ports of its own, so it never disturbs a test run), seeds the
# deployment guide's example secrets, gives the daemon an AppRole with only the shipped
# least-privilege policy (config/vault/vault-steward-policy.hcl), writes a demo config with short
# intervals under $VS_DEMO_DIR and runs `vault-steward run` in the foreground. Within a minute the
# log shows:
#   - API keys rotated (every 15 s): default-api-key, billing-service-key
#   - a PostgreSQL password rotated (orders-db, at once and then every 30 s)
#   - an age-encrypted raft snapshot uploaded to S3 (vault-snapshots, every 30 s)
#   - a KeyTooOld alert email for the hand-rotated OpenAI key (llm-openai, older than 15 s)
# The commands to look at each are printed before the daemon starts.
#
# Environment (defaults in brackets):
#   VS_DEMO_DIR [/tmp/vault-steward-demo/config]   the demo's config, keys and state
#   VS_DEMO_HTTP_PORT [9464]                       the daemon's /metrics
#   VS_DEMO_BIN                                    a vault-steward binary to run instead of
#                                                  building one with `cargo build`
#   VS_TESTBED_DIR [/tmp/vault-steward-demo/testbed] and VS_TESTBED_{BAO,BAO_CLUSTER,S3,SMTP,PG}_PORT
#                  [8200 8201 39300 32530 35433]   the servers (see scripts/testbed.sh)
# SIGINT (Ctrl-C) or SIGTERM stops the daemon, then the servers, by the PIDs recorded at start.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/vault-steward/target}
export VS_TESTBED_DIR=${VS_TESTBED_DIR:-/tmp/vault-steward-demo/testbed}
export VS_TESTBED_BAO_PORT=${VS_TESTBED_BAO_PORT:-8200} VS_TESTBED_BAO_CLUSTER_PORT=${VS_TESTBED_BAO_CLUSTER_PORT:-8201}
export VS_TESTBED_S3_PORT=${VS_TESTBED_S3_PORT:-39300} VS_TESTBED_SMTP_PORT=${VS_TESTBED_SMTP_PORT:-32530}
export VS_TESTBED_PG_PORT=${VS_TESTBED_PG_PORT:-35433}
# A lock descriptor handed down by a test run belongs to that run's testbed, not to ours.
unset VS_TESTBED_LOCK_FD
DEMO=${VS_DEMO_DIR:-/tmp/vault-steward-demo/config}
HTTP_PORT=${VS_DEMO_HTTP_PORT:-9464}
BUCKET=vault-steward-demo

say() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }
DAEMON=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $DAEMON ]] && kill -0 "$DAEMON" 2> /dev/null; then
    say "stopping the daemon (pid $DAEMON)"
    kill -TERM "$DAEMON" 2> /dev/null || true
    wait "$DAEMON" 2> /dev/null || true
  fi
  say "stopping the local servers"
  scripts/testbed.sh down > /dev/null 2>&1 || say "WARNING: scripts/testbed.sh down failed"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "installing and starting OpenBao, S3, SMTP, PostgreSQL (first time: a few minutes)"
scripts/testbed.sh install
scripts/testbed.sh up
# shellcheck disable=SC1090
source "$(scripts/testbed.sh env)"
if [[ -n ${VS_DEMO_BIN:-} ]]; then
  BIN=$VS_DEMO_BIN
else
  say "building vault-steward (first time: about 10 minutes on 2 cores)"
  cargo build --quiet --bin vault-steward
  BIN=$CARGO_TARGET_DIR/debug/vault-steward
fi
[[ -x $BIN ]] || { say "ERROR: $BIN is not an executable"; exit 1; }
AWS=$(dirname "$VS_TEST_PYTHON")/aws
PSQL=$(command -v psql || echo "$(dirname "$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")/psql")

export BAO_ADDR=$VS_TEST_VAULT_ADDR
BAO_TOKEN=$(cat "$VS_TEST_VAULT_TOKEN_FILE")
export BAO_TOKEN
bao() { "$VS_TEST_BAO_BIN" "$@"; }
rm -rf "$DEMO"
mkdir -p "$DEMO/jobs"
chmod 700 "$DEMO"

say "seeding the deployment guide's secrets"
bao kv put -mount=secret llm-api-key/openai api_key=sk-demo-openai-key-rotated-by-hand > /dev/null
bao kv put -mount=secret api-key/default api_key=initial-default-key > /dev/null
bao kv put -mount=secret service/billing/credentials api_key=initial-billing-key client=billing > /dev/null

say "creating the PostgreSQL role orders_app and its admin login in Vault"
ORDERS_PW=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
# postgres://USER:PASSWORD@HOST:PORT/DB (the testbed's password is hex). The password goes in the
# environment and the SQL on stdin, so that no password shows on a command line.
PG_PW=${VS_TEST_PG_URL#postgres://*:}
PG_PW=${PG_PW%%@*}
PGPASSWORD=$PG_PW "$PSQL" -q -v ON_ERROR_STOP=1 "${VS_TEST_PG_URL/:$PG_PW@/@}" > /dev/null << SQL
CREATE ROLE orders_app LOGIN PASSWORD '$ORDERS_PW';
SQL
unset ORDERS_PW PG_PW
# The admin login vault-steward uses for ALTER ROLE (here the demo cluster's superuser). Given to
# bao on stdin, so that the password does not show on a command line.
printf '{"url": "%s"}' "$VS_TEST_PG_URL" | bao kv put -mount=secret database/orders-admin - > /dev/null

say "creating the S3 bucket $BUCKET and an age key for the snapshots"
"$AWS" --endpoint-url "$VS_TEST_S3_ENDPOINT" s3 mb "s3://$BUCKET" > /dev/null
age-keygen -o "$DEMO/age-identity.txt" 2> /dev/null
RECIPIENT=$(age-keygen -y "$DEMO/age-identity.txt")

say "giving the daemon an AppRole with only the shipped policy config/vault/vault-steward-policy.hcl"
bao policy write vault-steward config/vault/vault-steward-policy.hcl > /dev/null
bao write auth/approle/role/vault-steward token_policies=vault-steward \
  token_no_default_policy=true token_ttl=1h token_max_ttl=4h > /dev/null
(
  umask 077
  bao read -field=role_id auth/approle/role/vault-steward/role-id > "$DEMO/role-id"
  bao write -f -field=secret_id auth/approle/role/vault-steward/secret-id > "$DEMO/secret-id"
)

cat > "$DEMO/steward.toml" << TOML
# Demo configuration written by scripts/demo.sh.
[vault]
address = "$VS_TEST_VAULT_ADDR"
[vault.auth]
method = "approle"
role_id_file = "$DEMO/role-id"
secret_id_file = "$DEMO/secret-id"

[state]
url = "sqlite://$DEMO/state.db"

[http]
listen = "127.0.0.1:$HTTP_PORT"

[jobs]
dir = "jobs"

[alerts]
retry_initial = "5s"

# The demo's SMTP server writes every mail to $VS_TEST_MAILDIR/new.
[[alerts.email]]
name = "demo-mail"
smtp_url = "smtp://$VS_TEST_SMTP_ADDR"
from = "vault-steward demo <vault-steward@demo.invalid>"
to = ["you@demo.invalid"]
TOML
cat > "$DEMO/jobs/api-keys.toml" << 'TOML'
# Self-issued API keys, rotated every 15 s for the demo (30d in production).
[[job]]
name = "default-api-key"
kind = "api-key"
path = "secret/api-key/default"
every = "15s"
format = "hex:24"

[[job]]
name = "billing-service-key"
kind = "api-key"
path = "secret/service/billing/credentials"
every = "15s"
format = "base64url:32"
prefix = "bill_"
TOML
cat > "$DEMO/jobs/postgres.toml" << 'TOML'
# The PostgreSQL role orders_app: its password is rotated at once (there is no consumer secret
# yet) and then every 30 s (90d in production). Consumers read secret/database/orders.
[[job]]
name = "orders-db"
kind = "postgres"
path = "secret/database/orders"
admin_path = "secret/database/orders-admin"
username = "orders_app"
every = "30s"
TOML
cat > "$DEMO/jobs/raft-snapshot.toml" << TOML
# An age-encrypted raft snapshot to S3 every 30 s (hourly in production).
[[job]]
name = "vault-snapshots"
kind = "raft-snapshot"
schedule = "*/30 * * * * *"
retain = "5m"
recipients = ["$RECIPIENT"]
[job.s3]
bucket = "$BUCKET"
prefix = "vault/demo"
region = "us-east-1"
endpoint = "$VS_TEST_S3_ENDPOINT"
force_path_style = true
TOML
cat > "$DEMO/jobs/reminder.toml" << 'TOML'
# The OpenAI key is rotated by hand: alert by email once it is older than 15 s (30d in production).
[[job]]
name = "llm-openai"
kind = "reminder"
path = "secret/llm-api-key/openai"
max_age = "15s"
check_every = "5s"

[[job]]
name = "vault-health"
kind = "vault-health"
schedule = "*/30 * * * * *"
TOML
cat > "$DEMO/vault-steward" << SH
#!/bin/sh
exec "$BIN" --config "$DEMO/steward.toml" "\$@"
SH
chmod +x "$DEMO/vault-steward"

say "config in $DEMO; metrics on http://127.0.0.1:$HTTP_PORT/metrics"
say "watch the log below for 'run finished' and 'notification sent', or in another terminal:"
say "  $DEMO/vault-steward status"
say "  BAO_ADDR=$BAO_ADDR BAO_TOKEN=\$(cat $VS_TEST_VAULT_TOKEN_FILE) $VS_TEST_BAO_BIN kv metadata get -mount=secret api-key/default"
say "  $DEMO/vault-steward backups list vault-snapshots"
say "  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing $AWS --endpoint-url $VS_TEST_S3_ENDPOINT s3 ls --recursive s3://$BUCKET/"
say "  $DEMO/vault-steward backups verify vault-snapshots --latest --identity $DEMO/age-identity.txt"
say "  ls $VS_TEST_MAILDIR/new    (the alert emails, one file each)"
say "starting the daemon (Ctrl-C to stop)"
# In the background, so that a signal to this script alone stops it too (see cleanup).
"$BIN" --config "$DEMO/steward.toml" run &
DAEMON=$!
wait "$DAEMON"
