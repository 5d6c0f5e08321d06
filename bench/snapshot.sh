#!/usr/bin/env bash
# bench/snapshot.sh - a large raft snapshot through vault-steward to S3, against the deployment
# guide's shell pipeline, in the same run.
#
#   bench/snapshot.sh [SIZE_MIB]      (default 512)
#
# Starts its own testbed (separate state dir and ports, so it never disturbs a test run), builds
# the release binary, and writes a Vault-shaped snapshot archive of SIZE_MIB (random state.bin:
# a large Vault's data is mostly encrypted values, which do not compress). A small "Vault" in
# front of the testbed's OpenBao serves that archive as GET sys/storage/raft/snapshot (sendfile)
# and forwards every other request (login, seal-status) to the real server. Then, each from the
# same source into the same S3 store, once per store:
#   pipeline       bao operator raft snapshot save → age -e → aws s3 cp   (the guide's cron job)
#   vault-steward  vault-steward snapshot JOB  (stream → check ∥ age → multipart upload)
# The stores, all on this machine's two cores, so the store's own work competes with the client's:
#   s3-mem  bench/s3-store: stands in for S3's servers, whose work does not run on the client's
#           cores: S3's protocol (SigV4 with the payload hash checked, CRC32 headers checked) in
#           memory, completion joining the parts without copying them (as S3 and MinIO do),
#           opaque ETags instead of MD5s. Built here on first use (~1 min). The target is judged
#           on this store.
#   s3s-fs  a Rust S3 server from crates.io on tmpfs (installed into ~/.cache/vault-steward/tools
#           on first use, 5-15 min to build). Completing an upload re-reads, re-hashes and copies
#           every part in one thread, a serial tail of ~2 s per 512 MiB that no client can overlap.
#   moto    the testbed's S3: Python, one core for everything, concatenates parts at completion.
# On the last two both sides spend most of their time in the store; their speed-ups are printed
# for reference.
# Then vault-steward once more with a 64 MiB archive, to show its memory does not grow with size.
# Prints wall time for both and the ratio, vault-steward's peak RSS, and the bytes each wrote to
# disk (getrusage: writes to block devices; vault-steward's state database and TMPDIR sit on
# tmpfs, so any byte it wrote to disk would be snapshot data). Targets: ratio >= 1.5, peak RSS
# < 64 MiB, 0 plaintext bytes on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-512}
TARGET_RATIO=1.5
TARGET_RSS_MIB=64

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/vault-steward/target}
export VS_TESTBED_DIR=${VS_TESTBED_DIR:-/tmp/vault-steward-bench-snapshot}
export VS_TESTBED_BAO_PORT=38300 VS_TESTBED_BAO_CLUSTER_PORT=38301 VS_TESTBED_S3_PORT=39300
export VS_TESTBED_SMTP_PORT=32530 VS_TESTBED_PG_PORT=35433
VENV=${VS_TESTBED_VENV:-${HOME:-/root}/.cache/vault-steward/venv}
HELPER=$PWD/bench/snapshot-source.py
WORK=$(mktemp -d)
SHM=$(mktemp -d /dev/shm/vault-steward-bench.XXXXXX)
SOURCE_PID=
S3S_PID=
MEM_PID=
cleanup() {
  [[ -n $SOURCE_PID ]] && kill "$SOURCE_PID" 2> /dev/null && wait "$SOURCE_PID" 2> /dev/null || true
  [[ -n $S3S_PID ]] && kill "$S3S_PID" 2> /dev/null && wait "$S3S_PID" 2> /dev/null || true
  [[ -n $MEM_PID ]] && kill "$MEM_PID" 2> /dev/null && wait "$MEM_PID" 2> /dev/null || true
  scripts/testbed.sh down > /dev/null 2>&1 || true
  rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT

scripts/testbed.sh install > /dev/null
scripts/testbed.sh up > /dev/null
# shellcheck disable=SC1090
source "$(scripts/testbed.sh env)"
if [[ -n ${VS_BENCH_BIN:-} ]]; then
  BIN=$VS_BENCH_BIN # e.g. a debug build, to try the script itself; the figures then mean little
else
  echo "building release binary..." >&2
  cargo build --release --quiet --bin vault-steward
  BIN=$CARGO_TARGET_DIR/release/vault-steward
fi
AWS=$VENV/bin/aws
BAO=$VS_TEST_BAO_BIN
TOOLS=${HOME:-/root}/.cache/vault-steward/tools
S3S_VERSION=0.14.1 # the newest s3s-fs that builds with this machine's rustc
if [[ ! -x $TOOLS/bin/s3s-fs ]] || ! "$TOOLS/bin/s3s-fs" --version | grep -q "$S3S_VERSION"; then
  echo "installing s3s-fs $S3S_VERSION (first run only, a few minutes)..." >&2
  cargo install --quiet --locked --root "$TOOLS" "s3s-fs@$S3S_VERSION" --features binary
fi
S3S_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$SHM/s3s"
"$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port "$S3S_PORT" --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$SHM/s3s" > "$WORK/s3s.log" 2>&1 &
S3S_PID=$!
S3S_ENDPOINT=http://127.0.0.1:$S3S_PORT
echo "building bench/s3-store..." >&2
cargo build --release --quiet --manifest-path bench/s3-store/Cargo.toml
MEM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$CARGO_TARGET_DIR/release/bench-s3-store" "127.0.0.1:$MEM_PORT" "$AWS_ACCESS_KEY_ID" \
  "$AWS_SECRET_ACCESS_KEY" > "$WORK/s3-mem.log" 2>&1 &
MEM_PID=$!
MEM_ENDPOINT=http://127.0.0.1:$MEM_PORT
for endpoint in "$S3S_ENDPOINT" "$MEM_ENDPOINT"; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "$endpoint" && break; sleep 0.1; done
done
ROOT=$(cat "$VS_TEST_VAULT_TOKEN_FILE")

# The age identity both sides encrypt to.
age-keygen -o "$WORK/identity.txt" 2> /dev/null
RECIPIENT=$(age-keygen -y "$WORK/identity.txt")
BUCKET=bench-$RANDOM$RANDOM
for endpoint in "$VS_TEST_S3_ENDPOINT" "$S3S_ENDPOINT" "$MEM_ENDPOINT"; do
  "$AWS" --endpoint-url "$endpoint" --region us-east-1 s3 mb "s3://$BUCKET" > /dev/null
done

start_source() { # start_source ARCHIVE: (re)starts the fake Vault serving ARCHIVE
  [[ -n $SOURCE_PID ]] && kill "$SOURCE_PID" 2> /dev/null && wait "$SOURCE_PID" 2> /dev/null || true
  rm -f "$WORK/port"
  python3 "$HELPER" serve "$VS_TEST_VAULT_ADDR" "$1" "$WORK/port" &
  SOURCE_PID=$!
  for _ in $(seq 1 100); do [[ -s $WORK/port ]] && break; sleep 0.1; done
  SOURCE=http://127.0.0.1:$(cat "$WORK/port")
}

steward_config() { # steward_config DIR ENDPOINT: a config whose only destination is S3 at ENDPOINT
  mkdir -p "$1/jobs"
  (umask 077; echo "$ROOT" > "$1/token")
  cat > "$1/steward.toml" << TOML
[vault]
address = "$SOURCE"
[vault.auth]
method = "token"
token_file = "$1/token"
[state]
url = "sqlite://$SHM/$(basename "$1").db"
[http]
listen = "127.0.0.1:0"
[jobs]
dir = "jobs"
[engine]
job_timeout = "1h"
TOML
  cat > "$1/jobs/bench.toml" << TOML
[[job]]
name = "bench"
kind = "raft-snapshot"
recipients = ["$RECIPIENT"]
[job.s3]
bucket = "$BUCKET"
prefix = "steward-$(basename "$1")"
region = "us-east-1"
endpoint = "$2"
force_path_style = true
TOML
}

measure() { python3 "$HELPER" measure "$@"; }
# vault-steward's temp files (SQLite's, if any) go to tmpfs too, so that any disk write it makes
# could only be snapshot data.
# Its log goes there as well (a log line written to a file on disk would count as a disk write).
steward() { TMPDIR=$SHM VAULT_STEWARD_LOG=warn measure "$@" 2>> "$SHM/steward.log"; }

echo "writing a ${SIZE_MIB} MiB snapshot archive..." >&2
python3 "$HELPER" archive "$WORK/source.snap" "$SIZE_MIB"
ARCHIVE_BYTES=$(stat -c %s "$WORK/source.snap")
start_source "$WORK/source.snap"

# compare STORE ENDPOINT: the guide's pipeline, then vault-steward, into the same bucket of STORE.
compare() {
  local store=$1 endpoint=$2
  echo "[$store] pipeline: bao operator raft snapshot save | age -e | aws s3 cp ..." >&2
  rm -rf "$WORK/pipe" && mkdir -p "$WORK/pipe"
  local snap
  snap=$WORK/pipe/vault-$(date -u +%Y%m%d-%H%M%S).snap
  BAO_ADDR=$SOURCE BAO_TOKEN=$ROOT measure "$WORK/p1-$store.json" -- "$BAO" operator raft snapshot save "$snap"
  measure "$WORK/p2-$store.json" -- age -e -r "$RECIPIENT" -o "$snap.age" "$snap"
  measure "$WORK/p3-$store.json" -- "$AWS" --endpoint-url "$endpoint" --region us-east-1 --only-show-errors \
    s3 cp "$snap.age" "s3://$BUCKET/pipeline/"
  rm -rf "$WORK/pipe"

  echo "[$store] vault-steward: snapshot ..." >&2
  steward_config "$WORK/big-$store" "$endpoint"
  steward "$WORK/s1-$store.json" -- "$BIN" --config "$WORK/big-$store/steward.toml" snapshot bench > /dev/null \
    || { cat "$SHM/steward.log" >&2; exit 1; }
  # Check what landed: the object decrypts to the very archive the source served.
  local key
  key=$("$AWS" --endpoint-url "$endpoint" --region us-east-1 s3 ls "s3://$BUCKET/steward-big-$store/" \
    | awk '/\.snap\.age$/ {print $4}')
  [[ -n $key ]] || { echo "vault-steward published no snapshot to $store" >&2; exit 1; }
  "$AWS" --endpoint-url "$endpoint" --region us-east-1 s3 cp "s3://$BUCKET/steward-big-$store/$key" - \
    | age -d -i "$WORK/identity.txt" | sha256sum | cut -d' ' -f1 > "$WORK/landed.sha"
  cmp -s "$WORK/landed.sha" "$WORK/source.sha" \
    || { echo "the snapshot uploaded to $store does not decrypt to the source archive" >&2; exit 1; }
}
sha256sum "$WORK/source.snap" | cut -d' ' -f1 > "$WORK/source.sha"
compare moto "$VS_TEST_S3_ENDPOINT"
compare s3s-fs "$S3S_ENDPOINT"
compare s3-mem "$MEM_ENDPOINT"

# getrusage counts any page the process dirtied on a block device; to name the files, run the
# same snapshot once more under strace and add up every write to a regular file that is not on
# tmpfs (sockets, pipes, eventfds and $SHM excluded): that is the most plaintext it could have
# put on disk.
echo "vault-steward: the same snapshot under strace, to list every file it writes ..." >&2
command -v strace > /dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q strace > /dev/null
steward_config "$WORK/traced" "$VS_TEST_S3_ENDPOINT"
# -ff: one log per thread, so no call is split into "unfinished" and "resumed" halves.
TMPDIR=$SHM VAULT_STEWARD_LOG=warn strace -ff -y -qq -o "$SHM/strace" \
  -e trace=write,pwrite64,writev,pwritev,pwritev2,sendfile,splice,copy_file_range,openat,creat,rename \
  "$BIN" --config "$WORK/traced/steward.toml" snapshot bench > /dev/null 2>> "$SHM/steward.log"
python3 - "$SHM" > "$WORK/traced.json" << 'PY'
import glob, json, re, sys
shm = sys.argv[1]
skip = ("socket:", "pipe:", "anon_inode:", "/dev/null", "/dev/pts", shm)
write = re.compile(r"^(write|pwrite64|writev|pwritev2?|sendfile|splice|copy_file_range)\((\d+)<([^>]*)>.*= (\d+)$")
opened = re.compile(r'^(openat|creat)\(.*"([^"]+)", ([A-Z_|]+).*= \d+')
files, written = set(), 0
for line in (l for f in glob.glob(shm + "/strace.*") for l in open(f)):
    m = write.match(line.strip())
    if m and not m.group(3).startswith(skip):
        files.add(m.group(3))
        written += int(m.group(4))
    m = opened.match(line.strip())
    if m and ("O_WRONLY" in m.group(3) or "O_RDWR" in m.group(3) or "O_CREAT" in m.group(3)) \
            and not m.group(2).startswith(skip):
        files.add(m.group(2))
print(json.dumps({"files": sorted(files), "bytes": written}))
PY

echo "vault-steward: a 64 MiB snapshot, for memory vs size ..." >&2
python3 "$HELPER" archive "$WORK/small.snap" 64
start_source "$WORK/small.snap"
steward_config "$WORK/small" "$VS_TEST_S3_ENDPOINT"
steward "$WORK/s2.json" -- "$BIN" --config "$WORK/small/steward.toml" snapshot bench > /dev/null \
  || { cat "$SHM/steward.log" >&2; exit 1; }

python3 - "$WORK" "$ARCHIVE_BYTES" "$TARGET_RATIO" "$TARGET_RSS_MIB" "$SIZE_MIB" << 'PY'
import json, sys
work, size, tratio, trss, size_mib = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
load = lambda n: json.load(open(f"{work}/{n}.json"))
mib = lambda b: b / 1048576
small = load("s2")
print(f"raft snapshot of {mib(size):.0f} MiB ({size} bytes), same source and bucket for both sides")
ratios, rss_big = {}, 0.0
for store in ("moto", "s3s-fs", "s3-mem"):
    p = [load(f"{n}-{store}") for n in ("p1", "p2", "p3")]
    s = load(f"s1-{store}")
    for r in p + [s, small]:
        assert r["rc"] == 0, r
    pipe_wall = sum(r["wall_s"] for r in p)
    ratios[store] = pipe_wall / s["wall_s"]
    rss_big = max(rss_big, s["max_rss_kib"] / 1024)
    print()
    print(f"S3 store: {store}")
    print(f"{'':34}{'wall (s)':>10}{'peak RSS (MiB)':>16}{'disk writes (MiB)':>19}")
    names = ["pipeline: bao snapshot save", "pipeline: age -e", "pipeline: aws s3 cp"]
    for n, r in zip(names, p):
        print(f"{n:34}{r['wall_s']:>10.2f}{r['max_rss_kib']/1024:>16.1f}{mib(r['disk_write_bytes']):>19.1f}")
    print(f"{'pipeline total':34}{pipe_wall:>10.2f}{'':>16}{mib(sum(r['disk_write_bytes'] for r in p)):>19.1f}")
    print(f"{'vault-steward snapshot':34}{s['wall_s']:>10.2f}{s['max_rss_kib']/1024:>16.1f}{mib(s['disk_write_bytes']):>19.1f}")
    print(f"{'speed-up (pipeline / vault-steward)':34}{ratios[store]:>10.2f}")
rss_small = small["max_rss_kib"] / 1024
print()
print(f"{'metric':52}{'value':>10}{'target':>10}  met")
ratio = ratios["s3-mem"]
print(f"{'speed-up, s3-mem (stands in for S3)':52}{ratio:>10.2f}{'>= ' + str(tratio):>10}  {'yes' if ratio >= tratio else 'NO'}")
for store in ("s3s-fs", "moto"):
    print(f"{'  for reference, ' + store + ' (store-bound)':52}{ratios[store]:>10.2f}")
print(f"{'vault-steward peak RSS, 512 MiB (MiB)':52}{rss_big:>10.1f}{'< ' + str(int(trss)):>10}  {'yes' if rss_big < trss else 'NO'}")
print(f"{'  same, 64 MiB snapshot (MiB)':52}{rss_small:>10.1f}{'':>10}")
traced = json.load(open(f"{work}/traced.json"))
plain = traced["bytes"]
print(f"{'vault-steward bytes written to files on disk':52}{plain:>10}{'0':>10}  {'yes' if plain == 0 else 'NO'}")
print(f"{'  (so plaintext bytes on disk; files: ' + (', '.join(traced['files']) or 'none') + ')':52}")
print(f"{'pipeline plaintext bytes on disk':52}{size:>10}")
PY
