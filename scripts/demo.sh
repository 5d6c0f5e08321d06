#!/usr/bin/env bash
# demo.sh - see vault-steward work in a minute, on a fresh machine.
#
#   scripts/demo.sh            (Ctrl-C stops the daemon and everything the demo started)
#
# Brings up a local OpenBao (raft) plus S3, SMTP and PostgreSQL through scripts/testbed.sh (its own
# state dir and ports, so it never disturbs a test run), seeds the deployment guide's example
# secrets, gives the daemon an AppRole with a least-privilege policy, writes a demo config with
# short intervals under $VS_DEMO_DIR (default /tmp/vault-steward-demo/config), builds the binary and
# runs `vault-steward run` in the foreground. Watch the log: API keys rotate every 20 s. In a second
# terminal: `$VS_DEMO_DIR/vault-steward status` (a wrapper with the demo's --config).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/vault-steward/target}
export VS_TESTBED_DIR=${VS_TESTBED_DIR:-/tmp/vault-steward-demo/testbed}
export VS_TESTBED_BAO_PORT=${VS_TESTBED_BAO_PORT:-8200} VS_TESTBED_BAO_CLUSTER_PORT=${VS_TESTBED_BAO_CLUSTER_PORT:-8201}
export VS_TESTBED_S3_PORT=${VS_TESTBED_S3_PORT:-39300} VS_TESTBED_SMTP_PORT=${VS_TESTBED_SMTP_PORT:-32530}
export VS_TESTBED_PG_PORT=${VS_TESTBED_PG_PORT:-35433}
DEMO=${VS_DEMO_DIR:-/tmp/vault-steward-demo/config}
HTTP_PORT=${VS_DEMO_HTTP_PORT:-9464}

say() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  say "stopping the local servers"
  scripts/testbed.sh down >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "installing and starting OpenBao, S3, SMTP, PostgreSQL (first time: a few minutes)"
scripts/testbed.sh install
scripts/testbed.sh up
# shellcheck disable=SC1090
source "$(scripts/testbed.sh env)"
say "building vault-steward (first time: about 10 minutes on 2 cores)"
cargo build --quiet --bin vault-steward
BIN=$CARGO_TARGET_DIR/debug/vault-steward

export BAO_ADDR=$VS_TEST_VAULT_ADDR
BAO_TOKEN=$(cat "$VS_TEST_VAULT_TOKEN_FILE")
export BAO_TOKEN
bao() { "$VS_TEST_BAO_BIN" "$@"; }

say "seeding the deployment guide's secrets"
bao kv put -mount=secret llm-api-key/openai api_key=sk-demo-openai-key-rotated-by-hand >/dev/null
bao kv put -mount=secret api-key/default api_key=initial-default-key >/dev/null
bao kv put -mount=secret service/orders/credentials api_key=initial-orders-key client=orders >/dev/null

say "creating the daemon's AppRole with a least-privilege policy"
bao policy write vault-steward - >/dev/null <<'HCL'
path "secret/data/api-key/*"              { capabilities = ["create", "read", "update"] }
path "secret/metadata/api-key/*"          { capabilities = ["create", "read", "update"] }
path "secret/data/service/+/credentials"     { capabilities = ["create", "read", "update"] }
path "secret/metadata/service/+/credentials" { capabilities = ["create", "read", "update"] }
path "secret/data/llm-api-key/*"          { capabilities = ["read"] }
path "secret/metadata/llm-api-key/*"      { capabilities = ["read"] }
HCL
bao write auth/approle/role/vault-steward token_policies=vault-steward token_ttl=1h token_max_ttl=4h >/dev/null
rm -rf "$DEMO"; mkdir -p "$DEMO/jobs"
(umask 077
 bao read -field=role_id auth/approle/role/vault-steward/role-id > "$DEMO/role-id"
 bao write -f -field=secret_id auth/approle/role/vault-steward/secret-id > "$DEMO/secret-id")

cat > "$DEMO/steward.toml" <<TOML
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
TOML
cat > "$DEMO/jobs/api-keys.toml" <<'TOML'
# Self-issued API keys, rotated every 20 s for the demo (30d in production).
[[job]]
name = "default-api-key"
kind = "api-key"
path = "secret/api-key/default"
every = "20s"
format = "hex:24"

[[job]]
name = "orders-service-key"
kind = "api-key"
path = "secret/service/orders/credentials"
every = "20s"
format = "base64url:32"
prefix = "ord_"
TOML
cat > "$DEMO/vault-steward" <<SH
#!/bin/sh
exec "$BIN" --config "$DEMO/steward.toml" "\$@"
SH
chmod +x "$DEMO/vault-steward"

say "config in $DEMO; metrics on http://127.0.0.1:$HTTP_PORT/metrics"
say "in another terminal:  $DEMO/vault-steward status   |   BAO_ADDR=$BAO_ADDR bao kv metadata get -mount=secret api-key/default"
say "starting the daemon (Ctrl-C to stop)"
"$BIN" --config "$DEMO/steward.toml" run
