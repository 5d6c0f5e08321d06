#!/usr/bin/env bash
# bench/idle.sh - the daemon's idle cost: RSS and CPU over 60 s with 100 configured jobs.
#
#   bench/idle.sh [SECONDS]      (default 60)
#
# Starts its own testbed (separate state dir and ports, so it never disturbs a test run), builds
# the release binary, configures 100 api-key jobs (every = 30d: each runs once at start to adopt
# or create its secret, then the daemon idles), waits for those first runs to finish, then samples
# /proc for SECONDS. Prints RSS (current and peak) and CPU as % of one core, each beside its
# target and as a ratio to it (ratio <= 1.0 meets the target).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
JOBS=100
TARGET_RSS_MIB=30
TARGET_CPU_PCT=0.5

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/vault-steward/target}
export VS_TESTBED_DIR=${VS_TESTBED_DIR:-/tmp/vault-steward-bench-idle}
export VS_TESTBED_BAO_PORT=28300 VS_TESTBED_BAO_CLUSTER_PORT=28301 VS_TESTBED_S3_PORT=29300
export VS_TESTBED_SMTP_PORT=22530 VS_TESTBED_PG_PORT=25433
WORK=$(mktemp -d)
DAEMON_PID=
cleanup() {
  [[ -n $DAEMON_PID ]] && kill -TERM "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
  scripts/testbed.sh down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

scripts/testbed.sh install >/dev/null
scripts/testbed.sh up >/dev/null
# shellcheck disable=SC1090
source "$(scripts/testbed.sh env)"
# VS_BENCH_PROFILE=debug measures the debug build instead (no 15-minute release build).
PROFILE=${VS_BENCH_PROFILE:-release}
echo "building the $PROFILE binary..." >&2
if [[ $PROFILE == release ]]; then cargo build --release --quiet --bin vault-steward
else cargo build --quiet --bin vault-steward; fi
BIN=$CARGO_TARGET_DIR/$PROFILE/vault-steward

ROOT=$(cat "$VS_TEST_VAULT_TOKEN_FILE")
vault() { curl -sf -H "X-Vault-Token: $ROOT" "$@"; }
vault -X PUT -d '{"policy":"path \"secret/data/bench/*\" { capabilities = [\"create\",\"read\",\"update\"] }\npath \"secret/metadata/bench/*\" { capabilities = [\"create\",\"read\",\"update\"] }"}' \
  "$VS_TEST_VAULT_ADDR/v1/sys/policies/acl/bench" >/dev/null
TOKEN=$(vault -X POST -d '{"policies":["bench"],"ttl":"2h"}' "$VS_TEST_VAULT_ADDR/v1/auth/token/create" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["client_token"])')
(umask 077; echo "$TOKEN" > "$WORK/token")
mkdir -p "$WORK/jobs"
for i in $(seq 1 $JOBS); do
  printf '[[job]]\nname = "key-%03d"\nkind = "api-key"\npath = "secret/bench/key-%03d"\nevery = "30d"\nformat = "hex:32"\n\n' "$i" "$i"
done > "$WORK/jobs/bench.toml"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/steward.toml" <<TOML
[vault]
address = "$VS_TEST_VAULT_ADDR"
[vault.auth]
method = "token"
token_file = "$WORK/token"
[state]
url = "sqlite://$WORK/state.db"
[http]
listen = "127.0.0.1:$PORT"
[jobs]
dir = "jobs"
TOML

VAULT_STEWARD_LOG=warn "$BIN" --config "$WORK/steward.toml" run 2> "$WORK/daemon.log" &
DAEMON_PID=$!
# Wait until every job has run once (100 successes), so the sample measures idling only.
for _ in $(seq 1 600); do
  n=$(curl -sf "http://127.0.0.1:$PORT/metrics" | grep -c 'job_runs_total{.*outcome="success"} 1' || true)
  [[ $n -ge $JOBS ]] && break
  sleep 0.1
done
[[ ${n:-0} -ge $JOBS ]] || { echo "only ${n:-0}/$JOBS jobs ran; log:" >&2; cat "$WORK/daemon.log" >&2; exit 1; }

HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status"; }
t0=$(ticks); s0=$(date +%s.%N)
max_rss=0
for _ in $(seq 1 "$SECS"); do
  r=$(rss_kib); (( r > max_rss )) && max_rss=$r
  sleep 1
done
t1=$(ticks); s1=$(date +%s.%N)
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAEMON_PID/status")

PROFILE=$PROFILE python3 - "$t0" "$t1" "$s0" "$s1" "$HZ" "$max_rss" "$hwm" "$TARGET_RSS_MIB" "$TARGET_CPU_PCT" "$JOBS" <<'PY'
import sys
t0, t1, s0, s1, hz, rss, hwm, trss, tcpu, jobs = sys.argv[1:]
cpu_pct = (int(t1) - int(t0)) / int(hz) / (float(s1) - float(s0)) * 100
rss_mib, hwm_mib = int(rss) / 1024, int(hwm) / 1024
print(f"idle, {jobs} jobs, {float(s1)-float(s0):.0f} s sampled, {__import__('os').environ.get('PROFILE', 'release')} build")
print(f"{'metric':<28}{'vault-steward':>14}{'target':>10}{'ratio':>8}")
print(f"{'RSS while idle (MiB)':<28}{rss_mib:>14.1f}{float(trss):>10.1f}{rss_mib/float(trss):>8.2f}")
print(f"{'peak RSS incl. start (MiB)':<28}{hwm_mib:>14.1f}{float(trss):>10.1f}{hwm_mib/float(trss):>8.2f}")
print(f"{'CPU (% of one core)':<28}{cpu_pct:>14.3f}{float(tcpu):>10.2f}{cpu_pct/float(tcpu):>8.2f}")
PY
