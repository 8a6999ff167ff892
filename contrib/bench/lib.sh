# shellcheck shell=bash
# What the benchmarks in contrib/bench (login.sh, provision.sh, sync.sh,
# serve.sh, dovecot.sh) share: logging, Debian packages, the binary, loopback
# ports, a private slapd and MariaDB, and stopping all of it at exit. What
# each one measures, and how, stays in the script itself.
#
# Sourced, not run: a script does `set -euo pipefail`, then
#   . "$(dirname "$0")/lib.sh"
# which sets BENCH_DIR (this folder), REPO_DIR (the checkout) and the names
# and passwords below; functions that start something say what they set.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/../.." && pwd)
BENCH_NAME=${0##*/} # the prefix of log lines: login.sh, sync.sh, ...

# Used by the scripts that source this file, hence no SC2034 (unused) here.
# shellcheck disable=SC2034
{
  # The directory: base DN, slapd's root and the service account (reader).
  BASE_DN="dc=example,dc=org"
  ADMIN_DN="cn=admin,$BASE_DN"
  ADMIN_PW="adminpw"
  READER_DN="cn=reader,$BASE_DN"
  READER_PW="readerpw"
  # The user whose logins are measured (login.sh, provision.sh, dovecot.sh).
  USER_LOGIN="bench@example.org"
  USER_DN="uid=bench,ou=people,$BASE_DN"
  USER_PW="bench-secret-1"
  # The MariaDB user the helper connects as (provision.sh, sync.sh, dovecot.sh).
  DB_USER="mailcow"
  DB_PW="mailcowpw"
  # mailcow's Default mailbox template as its init_db writes it
  # (tests/integration/provision.rs: DEFAULT_TEMPLATE); quota 0 = the domain's defquota.
  DEFAULT_TEMPLATE='{"tags":[],"quota":0,"quarantine_notification":"hourly","quarantine_category":"reject","rl_frame":"s","rl_value":"","force_pw_update":0,"sogo_access":1,"active":1,"tls_enforce_in":0,"tls_enforce_out":0,"imap_access":1,"pop3_access":1,"smtp_access":1,"sieve_access":1,"acl_spam_alias":1,"acl_tls_policy":1,"acl_spam_score":1,"acl_spam_policy":1,"acl_delimiter_action":1,"acl_syncjobs":0,"acl_eas_reset":1,"acl_sogo_profile_reset":0,"acl_pushover":1,"acl_quarantine":1,"acl_quarantine_attachments":1,"acl_quarantine_notification":1,"acl_quarantine_category":1,"acl_app_passwds":1}'
}

WORK=""       # the temporary folder (make_work)
STOP_PIDS=()  # what to stop at exit (stop_at_exit), in the order started
STOP_WHATS=() # and what each one is, for the log

# ---------------------------------------------------------------------------
# Logging and arguments.

log() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# check_positive NAME=VALUE...: die unless each VALUE is a positive integer.
check_positive() {
  local arg
  for arg in "$@"; do
    [[ "${arg#*=}" =~ ^[1-9][0-9]*$ ]] || die "$arg is not a positive integer"
  done
}

# ---------------------------------------------------------------------------
# Packages and the binary.

# install_packages PKG...: apt-get install those of the Debian packages PKG
# (and python3, when there is no python3 command) not installed yet; through
# sudo unless root. As tests/run.sh does.
install_packages() {
  local packages=("$@") missing=() p sudo=""
  command -v python3 >/dev/null || packages+=(python3)
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build_binary: unless BIN names an executable already, build the shipped
# binary (packaging/build-release.sh: statically linked) and set BIN to it.
build_binary() {
  if [ -n "${BIN:-}" ]; then
    [ -x "$BIN" ] || die "BIN=$BIN is not an executable file"
    return 0
  fi
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) or set BIN"
  log "packaging/build-release.sh (the shipped build)"
  BIN="$REPO_DIR/$("$REPO_DIR/packaging/build-release.sh" --quiet | tail -n 1)"
  [ -x "$BIN" ] || die "the build did not produce $BIN"
}

# copy_binary: copy BIN into WORK and point BIN there, so that a rebuild
# during the run cannot swap it.
copy_binary() {
  cp "$BIN" "$WORK/mailcow-ldap-auth"
  log "binary $BIN ($(stat -c %s "$BIN") B, copied to the work folder)"
  BIN="$WORK/mailcow-ldap-auth"
}

# ---------------------------------------------------------------------------
# The work folder, and stopping what was started, by pid, however the script exits.

# make_work NAME [DIR]: create WORK=DIR/NAME.XXXXXX (DIR: $TMPDIR or /tmp) and
# arrange for cleanup_at_exit to run when the script exits (INT: 130, TERM: 143).
make_work() {
  WORK=$(mktemp -d "${2:-${TMPDIR:-/tmp}}/$1.XXXXXX")
  trap cleanup_at_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# stop_at_exit PID WHAT: stop process PID (a child of this script) at exit.
stop_at_exit() {
  STOP_PIDS+=("$1")
  STOP_WHATS+=("$2")
}

# alive PID: whether process PID is still there.
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# stop_pid PID WHAT: SIGTERM, up to 20 s to exit, then SIGKILL; reap it.
stop_pid() {
  local pid=$1 what=$2
  alive "$pid" || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 200); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$what (pid $pid) did not stop: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# The EXIT trap (make_work): stop the processes of stop_at_exit, the last
# started first, then their children still there (Dovecot's and saslauthd's
# worker processes: 5 s, then SIGKILL); say what survived; remove WORK unless
# KEEP_WORK is set; exit with the script's status.
cleanup_at_exit() {
  local status=$? i pid children=() left=""
  trap - EXIT INT TERM
  set +e
  if command -v ps >/dev/null; then
    for pid in "${STOP_PIDS[@]}"; do
      alive "$pid" || continue
      for i in $(ps -o pid= --ppid "$pid"); do children+=("$i"); done
    done
  fi
  for ((i = ${#STOP_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${STOP_PIDS[i]}" "${STOP_WHATS[i]}"
  done
  for pid in "${children[@]}"; do
    for _ in $(seq 50); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for pid in "${STOP_PIDS[@]}" "${children[@]}"; do
    if alive "$pid"; then left="$left $pid"; fi
  done
  [ -z "$left" ] || log "still running after the stop:$left"
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ -n "${KEEP_WORK:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$status"
}

# ---------------------------------------------------------------------------
# Loopback ports and readiness.

# free_port: print a loopback port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# port_open PORT: whether something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until WHAT STATE PID LOGFILE SECONDS CMD [ARG...]: run CMD every 20 ms
# until it succeeds, then log "WHAT STATE (after N polls)". Die if process PID
# exits first (quoting the end of its LOGFILE), or after SECONDS.
wait_until() {
  local what=$1 state=$2 pid=$3 logfile=$4 limit=$5 try
  shift 5
  for try in $(seq $((limit * 50))); do
    if "$@" 2>/dev/null; then
      log "$what $state (after $try polls)"
      return 0
    fi
    alive "$pid" || die "$what (pid $pid) exited before it was ready; see $logfile: $(tail -n 5 "$logfile" 2>/dev/null)"
    sleep 0.02
  done
  die "$what was not ready within $limit s"
}

# wait_for_port PORT PID WHAT LOGFILE [SECONDS]: wait_until process PID
# listens on 127.0.0.1:PORT (within 10 s by default).
wait_for_port() {
  wait_until "$3" "listens on 127.0.0.1:$1" "$2" "$4" "${5:-10}" port_open "$1"
}

# ---------------------------------------------------------------------------
# A private slapd, in $WORK/slapd.

# ldif_head: the top of the directory: the base entry and the service account.
ldif_head() {
  cat <<EOF
dn: $BASE_DN
objectClass: top
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: $READER_DN
objectClass: simpleSecurityObject
objectClass: organizationalRole
cn: reader
userPassword: $READER_PW
EOF
}

# ldif_ou NAME: organizational unit ou=NAME under the base, after a blank line.
ldif_ou() {
  printf '\ndn: ou=%s,%s\nobjectClass: organizationalUnit\nou: %s\n' "$1" "$BASE_DN" "$1"
}

# ldif_bench_user MAILBOX: the measured user (USER_*) in ou=people, after a
# blank line; unless MAILBOX is "", with otherMailbox MAILBOX (the attribute
# the configs map to a template).
ldif_bench_user() {
  printf '\ndn: %s\nobjectClass: inetOrgPerson\n' "$USER_DN"
  [ -z "$1" ] || printf 'objectClass: extensibleObject\n'
  printf 'uid: bench\ncn: Bench User\nsn: User\ndisplayName: Bench User\nmail: %s\n' "$USER_LOGIN"
  [ -z "$1" ] || printf 'otherMailbox: %s\n' "$1"
  printf 'userPassword: %s\n' "$USER_PW"
}

# load_slapd LDIF_CMD [CONF_LINE...]: write $WORK/slapd/slapd.conf (in the
# style of tests/integration/support/slapd.rs, without TLS; CONF_LINEs added
# to the database section, SLAPD_MAXSIZE its size limit in bytes, 100 MiB by
# default) and load into a fresh database what LDIF_CMD prints (kept in
# $WORK/slapd/data.ldif). Clear-text passwords: slapd accepts them for binds.
load_slapd() {
  local dir="$WORK/slapd" ldif_cmd=$1 line
  shift
  mkdir -p "$dir/db"
  {
    cat <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile $dir/slapd.pid
argsfile $dir/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize ${SLAPD_MAXSIZE:-104857600}
suffix "$BASE_DN"
rootdn "$ADMIN_DN"
rootpw $ADMIN_PW
directory $dir/db
index objectClass eq
index mail,uid eq
EOF
    for line in "$@"; do printf '%s\n' "$line"; done
    cat <<EOF
access to attrs=userPassword by self write by anonymous auth by * none
access to dn.base="$BASE_DN" by * read
access to * by users read by anonymous auth by * none
EOF
  } >"$dir/slapd.conf"
  "$ldif_cmd" >"$dir/data.ldif"
  slapadd -q -f "$dir/slapd.conf" -l "$dir/data.ldif" >"$dir/slapadd.log" 2>&1 ||
    die "slapadd failed: $(tail -n 5 "$dir/slapadd.log")"
}

# run_slapd DN PASSWORD: start the slapd of load_slapd (plain LDAP) on a free
# loopback port, stopped at exit, and check that a bind as DN works. Sets
# LDAP_PORT, SLAPD_PID.
run_slapd() {
  local dir="$WORK/slapd"
  LDAP_PORT=$(free_port)
  # -d 0: stay in the foreground, so $! is slapd's own pid.
  slapd -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$LDAP_PORT/" -d 0 \
    </dev/null >/dev/null 2>"$dir/slapd.log" &
  SLAPD_PID=$!
  stop_at_exit "$SLAPD_PID" slapd
  wait_for_port "$LDAP_PORT" "$SLAPD_PID" slapd "$dir/slapd.log" 30
  ldapwhoami -x -H "ldap://127.0.0.1:$LDAP_PORT" -D "$1" -w "$2" >/dev/null ||
    die "ldapwhoami as $1 failed against the fresh slapd"
}

# ---------------------------------------------------------------------------
# A private MariaDB, in $WORK/mariadb.

# start_mariadb: a MariaDB as tests/integration/support/mariadb.rs starts it
# (without TLS), on a free loopback port, stopped at exit (max_connections:
# MARIADB_MAX_CONNECTIONS, 300 by default); root over its unix
# socket, DB_USER with DB_PW from 127.0.0.1 and localhost. Sets DB_PORT,
# DB_SOCKET, MARIADB_PID.
start_mariadb() {
  local dir="$WORK/mariadb"
  mkdir -p "$dir"
  mariadb-install-db --no-defaults --datadir="$dir/data" --user=root --skip-test-db \
    --auth-root-authentication-method=socket >"$dir/install.log" 2>&1 ||
    die "mariadb-install-db failed: $(tail -n 5 "$dir/install.log")"
  DB_PORT=$(free_port)
  DB_SOCKET="$dir/mysqld.sock"
  mariadbd --no-defaults --datadir="$dir/data" --socket="$DB_SOCKET" --port="$DB_PORT" \
    --pid-file="$dir/mariadbd.pid" --bind-address=127.0.0.1 --user=root --skip-log-bin \
    --innodb-buffer-pool-size=64M --max-connections="${MARIADB_MAX_CONNECTIONS:-300}" \
    </dev/null >/dev/null 2>"$dir/mariadbd.log" &
  MARIADB_PID=$!
  stop_at_exit "$MARIADB_PID" mariadbd
  wait_for_port "$DB_PORT" "$MARIADB_PID" mariadbd "$dir/mariadbd.log" 60
  root_sql -e "CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PW';
    CREATE USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PW';" || die "creating the user $DB_USER failed"
}

# root_sql [ARG...]: the mariadb client as root over the socket of
# start_mariadb; tab-separated output, no column names.
root_sql() {
  mariadb --no-defaults --socket="$WORK/mariadb/mysqld.sock" -uroot --batch --skip-column-names "$@"
}

# create_mailcow_db NAME: database NAME for DB_USER, with the mailcow schema
# subset (tests/integration/schema.sql) and the Default template; no domain yet.
create_mailcow_db() {
  local db=$1
  root_sql -e "CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
    GRANT ALL ON \`$db\`.* TO '$DB_USER'@'127.0.0.1';
    GRANT ALL ON \`$db\`.* TO '$DB_USER'@'localhost';" || die "creating database $db failed"
  root_sql "$db" <"$REPO_DIR/tests/integration/schema.sql" || die "loading schema.sql into $db failed"
  root_sql "$db" -e "INSERT INTO templates (template, type, attributes) VALUES ('Default', 'mailbox', '$DEFAULT_TEMPLATE');" ||
    die "inserting the Default template into $db failed"
}

# login_db_config ADDRESS: a config's closing sections for logins with a
# database: [database] reaching DB_NAME as DB_USER (ADDRESS: its host/port or
# socket lines), login provisioning on, and the mapping of the bench user's
# attribute value "default" to create_mailcow_db's Default template.
login_db_config() {
  cat <<EOF

[database]
$1
name = "$DB_NAME"
user = "$DB_USER"
password = "$DB_PW"
connect_timeout_ms = 2000

[provisioning]
login_provisioning = true

[[attribute_mapping]]
attribute = "default"
template = "Default"
EOF
}
