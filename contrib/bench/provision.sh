#!/usr/bin/env bash
# Benchmark of checkpassword logins with mailcow's database: the login of a
# user whose mailbox exists, and the first login that provisions one, each
# against one ldapwhoami bind measured in the same rounds.
# What it measures and how to read it: contrib/bench/PROVISION.md.
#
#   contrib/bench/provision.sh                  # N=200 rounds
#   N=500 contrib/bench/provision.sh            # more rounds (and as many more users)
#   BIN=/path/to/mailcow-ldap-auth contrib/bench/provision.sh   # no build, that binary
#   PREFILL=50000 contrib/bench/provision.sh    # the domain already holds 50,000 mailboxes
#   KEEP_WORK=1 contrib/bench/provision.sh      # keep the temporary folder (configs, logs)
#
# Everything runs from a mktemp -d folder on loopback ports; slapd and mariadbd
# are stopped by their pids when the script exits, however it exits.
# Exit status: 0 when every run worked (targets missed or not: this is a
# report), non-zero when something is broken (a login, a bind or a server
# failed, or the database does not hold what the logins should have written).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/../.." && pwd)
ROUNDS=${N:-200}
# Fresh users: one per counted first login, plus warm-up and RSS runs, plus room.
FRESH_USERS=$((ROUNDS + 50))
# Mailboxes already in the domain before the run (rows inserted by SQL): a
# first login counts the domain's mailboxes, so its cost grows with them.
PREFILL=${PREFILL:-0}

BASE_DN="dc=example,dc=org"
ADMIN_DN="cn=admin,$BASE_DN"
ADMIN_PW="adminpw"
READER_DN="cn=reader,$BASE_DN"
READER_PW="readerpw"
USER_LOGIN="bench@example.org"
USER_DN="uid=bench,ou=people,$BASE_DN"
USER_PW="bench-secret-1"
DB_NAME="mailcow"
DB_USER="mailcow"
DB_PW="mailcowpw"
# mailcow's Default mailbox template as its init_db writes it
# (tests/integration/provision.rs: DEFAULT_TEMPLATE); quota 0 = the domain's defquota.
DEFAULT_TEMPLATE='{"tags":[],"quota":0,"quarantine_notification":"hourly","quarantine_category":"reject","rl_frame":"s","rl_value":"","force_pw_update":0,"sogo_access":1,"active":1,"tls_enforce_in":0,"tls_enforce_out":0,"imap_access":1,"pop3_access":1,"smtp_access":1,"sieve_access":1,"acl_spam_alias":1,"acl_tls_policy":1,"acl_spam_score":1,"acl_spam_policy":1,"acl_delimiter_action":1,"acl_syncjobs":0,"acl_eas_reset":1,"acl_sogo_profile_reset":0,"acl_pushover":1,"acl_quarantine":1,"acl_quarantine_attachments":1,"acl_quarantine_notification":1,"acl_quarantine_category":1,"acl_app_passwds":1}'

WORK=""
SLAPD_PID=""
MARIADB_PID=""

log() { printf 'provision.sh: %s\n' "$*" >&2; }
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

# Build the release binary, unless BIN names one already built; then copy it
# into the work folder, so that a rebuild during the run cannot swap it.
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

# The directory: a service account (reader), the user whose mailbox will
# exist (bench), and $FRESH_USERS users u0..uN-1 for first logins, all with
# otherMailbox "default" (mapped to the Default template). Clear-text
# passwords, which slapd accepts for simple binds.
write_ldif() {
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

dn: ou=people,$BASE_DN
objectClass: organizationalUnit
ou: people

dn: $USER_DN
objectClass: inetOrgPerson
objectClass: extensibleObject
uid: bench
cn: Bench User
sn: User
displayName: Bench User
mail: $USER_LOGIN
otherMailbox: default
userPassword: $USER_PW
EOF
  python3 - "$FRESH_USERS" "$BASE_DN" <<'EOF'
import sys
n, base = int(sys.argv[1]), sys.argv[2]
out = sys.stdout
for i in range(n):
    out.write(f"\ndn: uid=u{i},ou=people,{base}\nobjectClass: inetOrgPerson\n"
              f"objectClass: extensibleObject\nuid: u{i}\ncn: User {i}\nsn: U{i}\n"
              f"displayName: User Number {i}\nmail: u{i}@example.org\n"
              f"otherMailbox: default\nuserPassword: pw-{i}\n")
EOF
}

# slapd.conf in the style of tests/integration/support/slapd.rs, without TLS.
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
maxsize 104857600
suffix "$BASE_DN"
rootdn "$ADMIN_DN"
rootpw $ADMIN_PW
directory $dir/db
index objectClass eq
index mail,uid eq
access to attrs=userPassword by self write by anonymous auth by * none
access to dn.base="$BASE_DN" by * read
access to * by users read by anonymous auth by * none
EOF
}

# Load the directory and start slapd (plain LDAP) on a free port: sets LDAP_PORT, SLAPD_PID.
start_slapd() {
  local dir="$WORK/slapd"
  mkdir -p "$dir/db"
  write_slapd_conf "$dir" >"$dir/slapd.conf"
  write_ldif >"$dir/data.ldif"
  slapadd -q -f "$dir/slapd.conf" -l "$dir/data.ldif" >"$dir/slapadd.log" 2>&1 ||
    die "slapadd failed: $(tail -n 5 "$dir/slapadd.log")"
  LDAP_PORT=$(free_port)
  # -d 0: stay in the foreground, so $! is slapd's own pid.
  slapd -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$LDAP_PORT/" -d 0 \
    </dev/null >/dev/null 2>"$dir/slapd.log" &
  SLAPD_PID=$!
  wait_for_port "$LDAP_PORT" "$SLAPD_PID" "slapd" "$dir/slapd.log"
  ldapwhoami -x -H "ldap://127.0.0.1:$LDAP_PORT" -D "$USER_DN" -w "$USER_PW" >/dev/null ||
    die "ldapwhoami as $USER_DN failed against the fresh slapd"
}

# Root SQL over the private server's socket.
root_sql() {
  mariadb --no-defaults --socket="$WORK/mariadb/mysqld.sock" -uroot --batch --skip-column-names "$@"
}

# A private MariaDB as tests/integration/support/mariadb.rs starts it (without
# TLS), the mailcow schema subset, a domain with room, the Default template and
# a password user for TCP: sets DB_PORT, MARIADB_PID.
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
  root_sql -e "CREATE DATABASE \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
    CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PW';
    CREATE USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PW';
    GRANT ALL ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1';
    GRANT ALL ON \`$DB_NAME\`.* TO '$DB_USER'@'localhost';" ||
    die "creating the database failed"
  root_sql "$DB_NAME" <"$REPO_DIR/tests/integration/schema.sql" || die "loading schema.sql failed"
  # Room for every first login: mailboxes, and quota (MiB) for all of them at defquota.
  local room=$((PREFILL + FRESH_USERS + 100))
  root_sql "$DB_NAME" -e "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active)
      VALUES ('example.org', $room, 10, 10240, $((room * 10)), 1);
    INSERT INTO templates (template, type, attributes) VALUES ('Default', 'mailbox', '$DEFAULT_TEMPLATE');" ||
    die "inserting the domain and the template failed"
  if [ "$PREFILL" -gt 0 ]; then
    # Other ldap mailboxes of the domain (p1..pN, 10 MiB each); MariaDB's
    # sequence engine generates the rows.
    root_sql "$DB_NAME" -e "INSERT INTO mailbox (username, password, name, quota, local_part, domain,
        attributes, authsource, active)
      SELECT CONCAT('p', seq, '@example.org'), '', CONCAT('Prefilled ', seq), 10485760,
        CONCAT('p', seq), 'example.org', '{}', 'ldap', 1 FROM seq_1_to_$PREFILL;" ||
      die "prefilling $PREFILL mailboxes failed"
    log "the domain holds $PREFILL prefilled mailboxes"
  fi
}

# write_config NAME DB: a config (mode 0600: it holds the passwords); DB
# "tcp" gives it the [database] section over TCP and the mapping, "socket" the
# same over the server's unix socket (as mailcow's Dovecot container reaches
# MariaDB), "no" leaves both out (auth only), to show what the database adds.
write_config() {
  local name=$1 db=$2 file="$WORK/$1.toml" address
  (
    umask 077
    cat >"$file" <<EOF
# contrib/bench/provision.sh: variant "$name"
state_dir = "$WORK/state-$name"
log_target = "stderr"

[ldap]
hosts = "127.0.0.1:$LDAP_PORT"
base_dn = "$BASE_DN"
bind_dn = "$READER_DN"
bind_password = "$READER_PW"
attribute_field = "otherMailbox"
connect_timeout_ms = 1000
timeout_ms = 2000

[dovecot]
uid = "5000"
gid = "5000"
EOF
    if [ "$db" != no ]; then
      if [ "$db" = socket ]; then
        address="socket = \"$WORK/mariadb/mysqld.sock\""
      else
        address="host = \"127.0.0.1\"
port = $DB_PORT"
      fi
      cat >>"$file" <<EOF

[database]
$address
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
    fi
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
  [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "N=$ROUNDS is not a positive integer"
  [[ "$PREFILL" =~ ^[0-9]+$ ]] || die "PREFILL=$PREFILL is not a number"
  install_packages
  build_binary

  WORK=$(mktemp -d -t mailcow-ldap-bench-provision.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  copy_binary

  log "load average before starting the servers: $(cut -d' ' -f1-3 /proc/loadavg)"
  start_slapd
  start_mariadb
  write_config db tcp
  write_config dbsock socket
  write_config nodb no

  log "$ROUNDS interleaved rounds; $FRESH_USERS users for first logins"
  python3 "$BENCH_DIR/measure_db.py" login \
    --bin "$BIN" --rounds "$ROUNDS" --work "$WORK" \
    --ldap-url "ldap://127.0.0.1:$LDAP_PORT" \
    --login "$USER_LOGIN" --password "$USER_PW" --user-dn "$USER_DN" \
    --fresh 'u{i}@example.org:pw-{i}' --fresh-count "$FRESH_USERS" \
    --mysql-socket "$WORK/mariadb/mysqld.sock" --db "$DB_NAME" --prefill "$PREFILL" \
    --slapd-pid "$SLAPD_PID" --mariadbd-pid "$MARIADB_PID"
}

main "$@"
