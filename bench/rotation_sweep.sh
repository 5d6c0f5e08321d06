#!/usr/bin/env bash
# bench/rotation_sweep.sh - a rotation sweep: JOBS api-key jobs all due at once, against a plain
# concurrent KV writer doing the same Vault writes, in the same run on the same OpenBao.
#
#   bench/rotation_sweep.sh [JOBS]      (default 10000)
#
# Starts its own testbed (separate state dir and ports, so it never disturbs a test run) and builds
# the release binary and the baseline writer (examples/kv_sweep_writer.rs). Then, on one OpenBao:
#   1. plain writer   JOBS keys: a new KV v2 version (check-and-set 0) + its custom_metadata each,
#                     CONCURRENCY at a time, nothing else (no state store, no locks, no reads);
#   2. vault-steward  JOBS api-key jobs for JOBS keys that do not exist yet, so every job is due at
#                     start; [engine] max_concurrent = CONCURRENCY. Measured from the first run's
#                     start to the last run's end (from the runs table), and the daemon's peak RSS
#                     (VmHWM) over the whole sweep, start-up included;
#   3. plain writer   again, on fresh keys: the baseline is the mean of 1 and 3, so neither side
#                     gains from running on the emptier raft log.
# Prints rotations/s for both, their ratio (target >= 0.8) and peak RSS (target < 64 MiB).
# Tunables: VS_BENCH_CONCURRENCY (16), VS_BENCH_PROFILE (release; "debug" for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-10000}
CONCURRENCY=${VS_BENCH_CONCURRENCY:-16}
PROFILE=${VS_BENCH_PROFILE:-release}
TARGET_RATIO=0.8
TARGET_RSS_MIB=64

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/vault-steward/target}
export VS_TESTBED_DIR=${VS_TESTBED_DIR:-/tmp/vault-steward-bench-sweep}
export VS_TESTBED_BAO_PORT=28400 VS_TESTBED_BAO_CLUSTER_PORT=28401 VS_TESTBED_S3_PORT=29400
export VS_TESTBED_SMTP_PORT=22540 VS_TESTBED_PG_PORT=25434
WORK=$(mktemp -d)
DAEMON_PID=
cleanup() {
  if [[ -n $DAEMON_PID ]]; then
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  scripts/testbed.sh down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '[sweep %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

scripts/testbed.sh install >/dev/null
scripts/testbed.sh up >/dev/null
# shellcheck disable=SC1090
source "$(scripts/testbed.sh env)"
log "building the $PROFILE binary and the baseline writer..."
if [[ $PROFILE == release ]]; then
  cargo build --release --quiet --bin vault-steward --example kv_sweep_writer
  OUT=$CARGO_TARGET_DIR/release
else
  cargo build --quiet --bin vault-steward --example kv_sweep_writer
  OUT=$CARGO_TARGET_DIR/debug
fi
BIN=$OUT/vault-steward
WRITER=$OUT/examples/kv_sweep_writer

ROOT=$(cat "$VS_TEST_VAULT_TOKEN_FILE")
vault() { curl -sf -H "X-Vault-Token: $ROOT" "$@"; }
vault -X PUT -d '{"policy":"path \"secret/data/bench-*\" { capabilities = [\"create\",\"read\",\"update\"] }\npath \"secret/metadata/bench-*\" { capabilities = [\"create\",\"read\",\"update\"] }"}' \
  "$VS_TEST_VAULT_ADDR/v1/sys/policies/acl/bench" >/dev/null
TOKEN=$(vault -X POST -d '{"policies":["bench"],"ttl":"4h"}' "$VS_TEST_VAULT_ADDR/v1/auth/token/create" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["client_token"])')
(umask 077; echo "$TOKEN" > "$WORK/token")

plain() { # $1 = path prefix; prints "count seconds keys_per_s"
  "$WRITER" "$VS_TEST_VAULT_ADDR" "$WORK/token" "$1" "$JOBS" "$CONCURRENCY"
}

log "1/3 plain writer: $JOBS keys, $CONCURRENCY at a time..."
read -r _ plain1_s plain1_rate < <(plain secret/bench-plain-a)
log "    ${plain1_rate} keys/s (${plain1_s} s)"

mkdir -p "$WORK/jobs"
python3 - "$JOBS" > "$WORK/jobs/sweep.toml" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f'[[job]]\nname = "key-{i:05d}"\nkind = "api-key"\npath = "secret/bench-sweep/key-{i:05d}"\n'
          f'every = "30d"\nformat = "hex:32"\n')
PY
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
[engine]
max_concurrent = $CONCURRENCY
TOML

log "2/3 vault-steward: $JOBS api-key jobs, all due at start..."
VAULT_STEWARD_LOG=warn "$BIN" --config "$WORK/steward.toml" run 2> "$WORK/daemon.log" &
DAEMON_PID=$!
t_start=$(date +%s.%N)
done_count() {
  python3 - "$WORK/state.db" <<'PY' 2>/dev/null || echo 0
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=5)
print(db.execute("SELECT count(*) FROM job_states WHERE last_success_at IS NOT NULL").fetchone()[0])
PY
}
n=0
for _ in $(seq 1 3600); do
  kill -0 "$DAEMON_PID" 2>/dev/null || { log "the daemon died; log:"; cat "$WORK/daemon.log" >&2; exit 1; }
  n=$(done_count)
  [[ $n -ge $JOBS ]] && break
  sleep 1
done
t_end=$(date +%s.%N)
[[ $n -ge $JOBS ]] || { log "only $n/$JOBS jobs succeeded within an hour"; tail -20 "$WORK/daemon.log" >&2; exit 1; }
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAEMON_PID/status")
cpu_ticks=$(awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat")
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=
read -r runs failures first_ms last_ms versions mean_ms < <(python3 - "$WORK/state.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
r = db.execute("SELECT count(*), sum(outcome = 'failure'), min(started_at), max(finished_at), avg(finished_at - started_at) FROM runs").fetchone()
v = db.execute("SELECT count(*) FROM job_states WHERE secret_version = 1").fetchone()[0]
print(r[0], r[1] or 0, r[2], r[3], v, int(r[4]))
PY
)
[[ $versions -eq $JOBS ]] || { log "expected $JOBS keys at version 1, found $versions"; exit 1; }
cpu_s=$(python3 -c "print(round($cpu_ticks / $(getconf CLK_TCK), 1))")
log "    $runs runs ($failures failed), first start to last end $(( last_ms - first_ms )) ms, mean run ${mean_ms} ms, daemon CPU ${cpu_s} s"

log "3/3 plain writer again, on fresh keys..."
read -r _ plain2_s plain2_rate < <(plain secret/bench-plain-b)
log "    ${plain2_rate} keys/s (${plain2_s} s)"

python3 - "$JOBS" "$CONCURRENCY" "$plain1_rate" "$plain2_rate" "$first_ms" "$last_ms" "$t_start" "$t_end" \
  "$hwm" "$runs" "$failures" "$TARGET_RATIO" "$TARGET_RSS_MIB" <<'PY'
import sys
(jobs, conc, p1, p2, first_ms, last_ms, t0, t1, hwm, runs, failures, tratio, trss) = sys.argv[1:]
jobs, p1, p2 = int(jobs), float(p1), float(p2)
plain = (p1 + p2) / 2
sweep_s = (int(last_ms) - int(first_ms)) / 1000
steward = jobs / sweep_s
wall = float(t1) - float(t0)
rss = int(hwm) / 1024
ratio = steward / plain
print(f"rotation sweep: {jobs} api-key jobs due at once, max_concurrent = {conc}")
print(f"{'':<34}{'rotations/s':>12}{'seconds':>10}")
print(f"{'plain KV writer (mean of 2 runs)':<34}{plain:>12.1f}{jobs / plain:>10.1f}")
print(f"{'  run 1 / run 2':<34}{p1:>6.1f} /{p2:>5.1f}")
print(f"{'vault-steward (first to last run)':<34}{steward:>12.1f}{sweep_s:>10.1f}")
print(f"{'vault-steward (process start to done)':<38}{jobs / wall:>8.1f}{wall:>10.1f}")
print(f"runs: {runs} ({failures} failed)")
print(f"{'metric':<28}{'value':>10}{'target':>10}{'meets':>7}")
print(f"{'ratio steward / plain':<28}{ratio:>10.2f}{'>= ' + tratio:>10}{'yes' if ratio >= float(tratio) else 'NO':>7}")
print(f"{'peak RSS (MiB)':<28}{rss:>10.1f}{'< ' + trss:>10}{'yes' if rss < float(trss) else 'NO':>7}")
PY
