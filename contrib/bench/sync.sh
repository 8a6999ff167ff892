#!/usr/bin/env bash
# Benchmark of `mailcow-ldap-auth sync` on a generated directory: the first
# import of 10,000 users, a no-op re-sync against a paged ldapsearch dump of
# the same entries (interleaved), and the peak RSS of a sync over 50,000.
# What it measures and how to read it: contrib/bench/SYNC.md.
#
#   contrib/bench/sync.sh                       # 10,000 + 50,000 users, 9 no-op rounds
#   ROUNDS=21 contrib/bench/sync.sh             # more no-op rounds
#   BIG_IMPORT=0 contrib/bench/sync.sh          # 50,000: dry run only, no real import
#   BIG_TIMEOUT=300 contrib/bench/sync.sh       # time limit (s) of the 50,000 import
#   SMALL_N=2000 BIG_N=5000 contrib/bench/sync.sh   # smaller directories (a quick try)
#   BIN=/path/to/mailcow-ldap-auth contrib/bench/sync.sh   # no build, that binary
#   KEEP_WORK=1 contrib/bench/sync.sh           # keep the temporary folder (configs, outputs)
#
# Everything runs from a mktemp -d folder on loopback ports; slapd and mariadbd
# are stopped by their pids when the script exits, however it exits.
# Exit status: 0 when every run worked (targets missed or not: this is a
# report), non-zero when something is broken (a sync or the baseline failed,
# a count is wrong, a server did not start).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/../.." && pwd)
SMALL_N=${SMALL_N:-10000}
BIG_N=${BIG_N:-50000}
ROUNDS=${ROUNDS:-9}
BIG_IMPORT=${BIG_IMPORT:-1}
BIG_TIMEOUT=${BIG_TIMEOUT:-900}
PAGE_SIZE=500

BASE_DN="dc=example,dc=org"
ADMIN_DN="cn=admin,$BASE_DN"
ADMIN_PW="adminpw"
READER_DN="cn=reader,$BASE_DN"
READER_PW="readerpw"
# The two directories live side by side in one slapd; each sync reads one of them.
SMALL_BASE="ou=small,$BASE_DN"
BIG_BASE="ou=big,$BASE_DN"
SMALL_DB="mailcow_small"
BIG_DB="mailcow_big"
DB_USER="mailcow"
DB_PW="mailcowpw"
# mailcow's Default mailbox template as its init_db writes it
# (tests/integration/provision.rs: DEFAULT_TEMPLATE); quota 0 = the domain's defquota.
DEFAULT_TEMPLATE='{"tags":[],"quota":0,"quarantine_notification":"hourly","quarantine_category":"reject","rl_frame":"s","rl_value":"","force_pw_update":0,"sogo_access":1,"active":1,"tls_enforce_in":0,"tls_enforce_out":0,"imap_access":1,"pop3_access":1,"smtp_access":1,"sieve_access":1,"acl_spam_alias":1,"acl_tls_policy":1,"acl_spam_score":1,"acl_spam_policy":1,"acl_delimiter_action":1,"acl_syncjobs":0,"acl_eas_reset":1,"acl_sogo_profile_reset":0,"acl_pushover":1,"acl_quarantine":1,"acl_quarantine_attachments":1,"acl_quarantine_notification":1,"acl_quarantine_category":1,"acl_app_passwds":1}'

WORK=""
SLAPD_PID=""
MARIADB_PID=""

log() { printf 'sync.sh: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# Install the Debian packages the benchmark starts or calls, as tests/run.sh does.
install_packages() {
  local packages=(slapd ldap-utils mariadb-server mariadb-client time)
  command -v python3 >/dev/null || packages+=(python3)
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Build the release binary, unless BIN names one already built.
build_binary() {
  if [ -n "${BIN:-}" ]; then
    [ -x "$BIN" ] || die "BIN=$BIN is not an executable file"
  else
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) or set BIN"
    log "packaging/build-release.sh (the shipped build)"
    BIN="$REPO_DIR/$("$REPO_DIR/packaging/build-release.sh" --quiet | tail -n 1)"
    [ -x "$BIN" ] || die "the build did not produce $BIN"
  fi
}

# Copy the binary into the work folder, so that a rebuild during the run cannot swap it.
copy_binary() {
  cp "$BIN" "$WORK/mailcow-ldap-auth"
  log "binary $BIN ($(stat -c %s "$BIN") B, copied to the work folder)"
  BIN="$WORK/mailcow-ldap-auth"
}

# A loopback port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Poll until something accepts TCP connections on 127.0.0.1:$1 (process $2
# must stay alive meanwhile; $4 is its log); give up after $5 s (default 10).
wait_for_port() {
  local port=$1 pid=$2 what=$3 logfile=$4 limit=${5:-10} try
  for try in $(seq $((limit * 50))); do
    if (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "$what listens on 127.0.0.1:$port (after $try polls)"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die "$what (pid $pid) exited before listening; see $logfile: $(tail -n 5 "$logfile")"
    sleep 0.02
  done
  die "$what did not listen on 127.0.0.1:$port within $limit s"
}

# The directory: a service account (reader) and two organizational units,
# ou=small with $SMALL_N users a0.. (a<i>@example.org) and ou=big with $BIG_N
# users b0.. (b<i>@example.org), as tests/integration/sync.rs generates them:
# mail, displayName, otherMailbox "default" (mapped to the Default template).
write_ldif() {
  python3 - "$BASE_DN" "$READER_DN" "$READER_PW" "$SMALL_N" "$BIG_N" <<'EOF'
import sys
base, reader_dn, reader_pw, small, big = sys.argv[1:4] + [int(x) for x in sys.argv[4:6]]
out = sys.stdout
out.write(f"dn: {base}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n"
          f"o: Example\ndc: example\n\n"
          f"dn: {reader_dn}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\n"
          f"cn: reader\nuserPassword: {reader_pw}\n")
for ou, prefix, n in (("small", "a", small), ("big", "b", big)):
    out.write(f"\ndn: ou={ou},{base}\nobjectClass: organizationalUnit\nou: {ou}\n")
    for i in range(n):
        u = f"{prefix}{i}"
        out.write(f"\ndn: uid={u},ou={ou},{base}\nobjectClass: inetOrgPerson\n"
                  f"objectClass: extensibleObject\nuid: {u}\ncn: User {u}\nsn: {u.upper()}\n"
                  f"displayName: User Number {u}\nmail: {u}@example.org\n"
                  f"otherMailbox: default\nuserPassword: pw-{u}\n")
EOF
}

# slapd.conf in the style of tests/integration/support/slapd.rs, without TLS.
# A directory this size needs the reader to be allowed past slapd's default
# size limit (500 entries), as a real mailcow LDAP reader must be.
write_slapd_conf() {
  local dir=$1
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
maxsize 1073741824
suffix "$BASE_DN"
rootdn "$ADMIN_DN"
rootpw $ADMIN_PW
directory $dir/db
index objectClass eq
index mail,uid eq
limits dn.exact="$READER_DN" size=unlimited time=unlimited
access to attrs=userPassword by self write by anonymous auth by * none
access to dn.base="$BASE_DN" by * read
access to * by users read by anonymous auth by * none
EOF
}

# Load the directory and start slapd (plain LDAP) on a free port: sets LDAP_PORT, SLAPD_PID.
start_slapd() {
  local dir="$WORK/slapd" t0
  mkdir -p "$dir/db"
  write_slapd_conf "$dir" >"$dir/slapd.conf"
  t0=$(date +%s.%N)
  write_ldif >"$dir/data.ldif"
  slapadd -q -f "$dir/slapd.conf" -l "$dir/data.ldif" >"$dir/slapadd.log" 2>&1 ||
    die "slapadd failed: $(tail -n 5 "$dir/slapadd.log")"
  log "directory of $((SMALL_N + BIG_N)) users generated and loaded in $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)") s"
  rm -f "$dir/data.ldif"
  LDAP_PORT=$(free_port)
  # -d 0: stay in the foreground, so $! is slapd's own pid.
  slapd -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$LDAP_PORT/" -d 0 \
    </dev/null >/dev/null 2>"$dir/slapd.log" &
  SLAPD_PID=$!
  wait_for_port "$LDAP_PORT" "$SLAPD_PID" "slapd" "$dir/slapd.log"
  ldapwhoami -x -H "ldap://127.0.0.1:$LDAP_PORT" -D "$READER_DN" -w "$READER_PW" >/dev/null ||
    die "ldapwhoami as $READER_DN failed against the fresh slapd"
}

# Root SQL over the private server's socket.
root_sql() {
  mariadb --no-defaults --socket="$WORK/mariadb/mysqld.sock" -uroot --batch --skip-column-names "$@"
}

# A private MariaDB as tests/integration/support/mariadb.rs starts it (without
# TLS), a password user for TCP, and one database per directory: sets DB_PORT, MARIADB_PID.
start_mariadb() {
  local dir="$WORK/mariadb"
  mkdir -p "$dir"
  mariadb-install-db --no-defaults --datadir="$dir/data" --user=root --skip-test-db \
    --auth-root-authentication-method=socket >"$dir/install.log" 2>&1 ||
    die "mariadb-install-db failed: $(tail -n 5 "$dir/install.log")"
  DB_PORT=$(free_port)
  mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/mysqld.sock" --port="$DB_PORT" \
    --pid-file="$dir/mariadbd.pid" --bind-address=127.0.0.1 --user=root --skip-log-bin \
    --innodb-buffer-pool-size=64M --max-connections=300 \
    </dev/null >/dev/null 2>"$dir/mariadbd.log" &
  MARIADB_PID=$!
  wait_for_port "$DB_PORT" "$MARIADB_PID" "mariadbd" "$dir/mariadbd.log" 60
  root_sql -e "CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PW';
    CREATE USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PW';" || die "creating the user failed"
  create_db "$SMALL_DB"
  create_db "$BIG_DB"
}

# create_db NAME: the mailcow schema subset, a domain whose limits allow
# 60,000 mailboxes at its defquota (10 MiB), and the Default template.
create_db() {
  local db=$1
  root_sql -e "CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
    GRANT ALL ON \`$db\`.* TO '$DB_USER'@'127.0.0.1';
    GRANT ALL ON \`$db\`.* TO '$DB_USER'@'localhost';" || die "creating database $db failed"
  root_sql "$db" <"$REPO_DIR/tests/integration/schema.sql" || die "loading schema.sql into $db failed"
  root_sql "$db" -e "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active)
      VALUES ('example.org', 60000, 10, 10240, 10240000, 1);
    INSERT INTO templates (template, type, attributes) VALUES ('Default', 'mailbox', '$DEFAULT_TEMPLATE');" ||
    die "inserting the domain and the template into $db failed"
}

# write_config NAME BASE DB: a config (mode 0600: it holds the passwords)
# reading BASE into DB, each with its own state_dir (lock and completion time).
write_config() {
  local name=$1 base=$2 db=$3 file="$WORK/$1.toml"
  (
    umask 077
    cat >"$file" <<EOF
# contrib/bench/sync.sh: "$name"
state_dir = "$WORK/state-$name"
log_target = "stderr"

[ldap]
hosts = "127.0.0.1:$LDAP_PORT"
base_dn = "$base"
bind_dn = "$READER_DN"
bind_password = "$READER_PW"
attribute_field = "otherMailbox"
connect_timeout_ms = 1000
timeout_ms = 30000

[database]
host = "127.0.0.1"
port = $DB_PORT
name = "$db"
user = "$DB_USER"
password = "$DB_PW"
connect_timeout_ms = 2000

[[attribute_mapping]]
attribute = "default"
template = "Default"

[sync]
import_users = true
periodic_full_sync = true
page_size = $PAGE_SIZE
EOF
  )
  chmod 600 "$file"
  mkdir -m 700 "$WORK/state-$name"
}

# Stop what we started, by pid, and remove the temporary folder.
cleanup() {
  local status=$?
  local pid
  for pid in "$SLAPD_PID" "$MARIADB_PID"; do
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$WORK" ]; then
    if [ -n "${KEEP_WORK:-}" ]; then
      log "kept $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$status"
}

main() {
  local v
  for v in SMALL_N BIG_N ROUNDS BIG_TIMEOUT; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v=${!v} is not a positive integer"
  done
  install_packages
  build_binary

  WORK=$(mktemp -d -t mailcow-ldap-bench-sync.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  copy_binary

  log "load average before starting the servers: $(cut -d' ' -f1-3 /proc/loadavg)"
  start_slapd
  start_mariadb
  write_config small "$SMALL_BASE" "$SMALL_DB"
  write_config big "$BIG_BASE" "$BIG_DB"

  local big_import=yes
  [ "$BIG_IMPORT" = 0 ] && big_import=no
  # The baseline: a paged dump of the entries and attributes a sync reads
  # (its filter is (&(mail=*)(otherMailbox=*)), its attributes mail,
  # displayName, cn, otherMailbox), 500 per page like page_size.
  python3 "$BENCH_DIR/measure_db.py" sync \
    --bin "$BIN" --work "$WORK" --rounds "$ROUNDS" \
    --small-conf "$WORK/small.toml" --small-n "$SMALL_N" --small-db "$SMALL_DB" \
    --big-conf "$WORK/big.toml" --big-n "$BIG_N" --big-db "$BIG_DB" \
    --big-import "$big_import" --big-timeout "$BIG_TIMEOUT" \
    --mysql-socket "$WORK/mariadb/mysqld.sock" \
    --slapd-pid "$SLAPD_PID" --mariadbd-pid "$MARIADB_PID" \
    -- "$(command -v ldapsearch)" -x -E "pr=$PAGE_SIZE/noprompt" \
    -H "ldap://127.0.0.1:$LDAP_PORT" -D "$READER_DN" -w "$READER_PW" -b "$SMALL_BASE" \
    '(&(mail=*)(otherMailbox=*))' mail otherMailbox displayName cn
}

main "$@"
