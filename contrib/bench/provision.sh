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

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

ROUNDS=${N:-200}
# Fresh users: one per counted first login, plus warm-up and RSS runs, plus room.
FRESH_USERS=$((ROUNDS + 50))
# Mailboxes already in the domain before the run (rows inserted by SQL): a
# first login counts the domain's mailboxes, so its cost grows with them.
PREFILL=${PREFILL:-0}

DB_NAME="mailcow"

# The directory: a service account (reader), the user whose mailbox will
# exist (bench), and $FRESH_USERS users u0..uN-1 for first logins, all with
# otherMailbox "default" (mapped to the Default template). Clear-text
# passwords, which slapd accepts for simple binds.
write_ldif() {
  ldif_head
  ldif_ou people
  ldif_bench_user default
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

# The database: the mailcow schema subset, a domain with room for every first
# login, the Default template, and PREFILL mailboxes already there.
create_db() {
  create_mailcow_db "$DB_NAME"
  # Room for every first login: mailboxes, and quota (MiB) for all of them at defquota.
  local room=$((PREFILL + FRESH_USERS + 100))
  root_sql "$DB_NAME" -e "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active)
      VALUES ('example.org', $room, 10, 10240, $((room * 10)), 1);" ||
    die "inserting the domain failed"
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
        address="socket = \"$DB_SOCKET\""
      else
        address="host = \"127.0.0.1\"
port = $DB_PORT"
      fi
      login_db_config "$address" >>"$file"
    fi
  )
  chmod 600 "$file"
  mkdir -m 700 "$WORK/state-$name"
}

main() {
  check_positive "N=$ROUNDS"
  [[ "$PREFILL" =~ ^[0-9]+$ ]] || die "PREFILL=$PREFILL is not a number"
  install_packages slapd ldap-utils mariadb-server mariadb-client time dovecot-core
  build_binary
  make_work mailcow-ldap-bench-provision
  copy_binary

  log "load average before starting the servers: $(cut -d' ' -f1-3 /proc/loadavg)"
  load_slapd write_ldif
  run_slapd "$USER_DN" "$USER_PW"
  start_mariadb
  create_db
  write_config db tcp
  write_config dbsock socket
  write_config nodb no

  log "$ROUNDS interleaved rounds; $FRESH_USERS users for first logins"
  python3 "$BENCH_DIR/measure_db.py" login \
    --bin "$BIN" --rounds "$ROUNDS" --work "$WORK" \
    --ldap-url "ldap://127.0.0.1:$LDAP_PORT" \
    --login "$USER_LOGIN" --password "$USER_PW" --user-dn "$USER_DN" \
    --fresh 'u{i}@example.org:pw-{i}' --fresh-count "$FRESH_USERS" \
    --mysql-socket "$DB_SOCKET" --db "$DB_NAME" --prefill "$PREFILL" \
    --slapd-pid "$SLAPD_PID" --mariadbd-pid "$MARIADB_PID"
}

main "$@"
