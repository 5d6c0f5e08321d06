#!/usr/bin/env bash
# test.sh - THE test command: every test, unit and integration, against real local servers.
#
#   scripts/test.sh [--lint] [CARGO_TEST_ARGS...] [-- LIBTEST_ARGS...]
#
#   1. scripts/testbed.sh install                (idempotent; about a second when already done)
#   2. with --lint or LINT=1 (CI sets it): cargo fmt --check, cargo clippy --all-targets -D warnings;
#      a lint failure fails the run, but the tests still run so one run reports both
#   3. cargo test --all-targets --no-run        (a build failure stops here, before any server starts)
#   4. scripts/testbed.sh up, then source the env file it writes (the VS_TEST_* contract)
#   5. cargo test --all-targets ARGS -- --test-threads=4 LIBTEST_ARGS
#      (--all-targets is left out when ARGS pick targets, e.g. --lib or --test NAME;
#      --test-threads=4 when LIBTEST_ARGS set their own)
#   6. scripts/testbed.sh down, also on failure or interrupt
#   Exits with cargo test's status (1 if the tests passed but lint failed).
#
# Examples:  scripts/test.sh                      scripts/test.sh --test testbed_contract
#            scripts/test.sh --lib config::       scripts/test.sh postgres -- --nocapture
# To keep the servers for a debugging session, run testbed.sh up yourself and source its env file.
#
# CARGO_TARGET_DIR defaults to /root/.cache/vault-steward/target (outside the clone, so a fresh
# clone on a warm machine builds incrementally); a value already set is honoured. While it runs,
# test.sh holds the testbed's lock, so a second run on the same machine waits (up to
# VS_TESTBED_LOCK_WAIT seconds, default 1800) instead of tearing down this one's servers.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTBED=$ROOT/scripts/testbed.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/vault-steward/target}
export VS_TESTBED_DIR=${VS_TESTBED_DIR:-/tmp/vault-steward-testbed} # same default as testbed.sh

log() { printf '[test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

lint=0
case "${LINT:-}" in 1 | true | yes) lint=1 ;; esac
cargo_args=()
libtest_args=()
while (($#)); do
  case "$1" in
    --lint) lint=1 ;;
    --) shift; libtest_args=("$@"); break ;;
    *) cargo_args+=("$1") ;;
  esac
  shift
done
# Our defaults give way to the caller's own choice of targets or test threads.
targets=(--all-targets)
for a in "${cargo_args[@]}"; do
  case "$a" in
    --lib | --bins | --bin | --bin=* | --tests | --test | --test=* | --benches | --bench | --bench=* | \
      --examples | --example | --example=* | --doc | --all-targets) targets=() ;;
  esac
done
threads=(--test-threads=4)
for a in "${libtest_args[@]}"; do
  if [[ $a == --test-threads* ]]; then threads=(); fi
done

# The one cargo test invocation; $@ adds cargo options such as --no-run. The lock descriptor is
# closed for cargo, so a daemon a test forgets to stop cannot keep the testbed locked.
cargo_test() {
  cargo test --no-fail-fast --features failpoints "${targets[@]}" "${cargo_args[@]}" "$@" -- "${threads[@]}" "${libtest_args[@]}" {lock_fd}>&-
}

cd "$ROOT"
t0=$SECONDS
testbed_up=0
# shellcheck disable=SC2317 # reached through the EXIT trap
finish() {
  local rc=$?
  trap - EXIT INT TERM
  if ((testbed_up)); then
    "$TESTBED" down || log "WARNING: testbed down failed"
    ((rc == 0)) || log "server logs: $VS_TESTBED_DIR/logs  daemon logs of the run: $VS_TESTBED_DIR/test-logs"
  fi
  log "done in $((SECONDS - t0))s (exit $rc)"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$VS_TESTBED_DIR"
exec {lock_fd}>> "$VS_TESTBED_DIR/lock"
if ! flock -n "$lock_fd"; then
  log "another test run holds $VS_TESTBED_DIR/lock; waiting up to ${VS_TESTBED_LOCK_WAIT:-1800}s"
  flock -w "${VS_TESTBED_LOCK_WAIT:-1800}" "$lock_fd" || die "gave up waiting for $VS_TESTBED_DIR/lock"
fi
export VS_TESTBED_LOCK_FD=$lock_fd

"$TESTBED" install

lint_rc=0
if ((lint)); then
  log "lint: cargo fmt --check"
  cargo fmt --version > /dev/null 2>&1 || die "rustfmt is missing from this toolchain (none can be fetched here)"
  cargo fmt --all -- --check {lock_fd}>&- || { lint_rc=1; log "lint: cargo fmt --check FAILED"; }
  log "lint: cargo clippy --all-targets -- -D warnings"
  cargo clippy --version > /dev/null 2>&1 || die "clippy is missing from this toolchain (none can be fetched here)"
  cargo clippy --all-targets -- -D warnings {lock_fd}>&- || { lint_rc=1; log "lint: cargo clippy FAILED"; }
fi

log "building tests (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo_test --no-run

testbed_up=1
"$TESTBED" up
# shellcheck source=/dev/null
source "$("$TESTBED" env)"

log "running tests"
rc=0
cargo_test || rc=$?
# The canary scan reads the logs and state files every other test left behind, so it runs last,
# and only after a full run (its target has `test = false`, so the run above skipped it).
if ((rc == 0 && ${#cargo_args[@]} == 0)); then
  log "canary scan: no secret value in any log or state file of the run"
  cargo test --features failpoints --test canary_scan {lock_fd}>&- || rc=$?
fi
if ((rc == 0 && lint_rc != 0)); then
  log "tests passed but lint failed"
  rc=1
fi
exit "$rc"
