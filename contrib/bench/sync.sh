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

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

SMALL_N=${SMALL_N:-10000}
BIG_N=${BIG_N:-50000}
ROUNDS=${ROUNDS:-9}
BIG_IMPORT=${BIG_IMPORT:-1}
BIG_TIMEOUT=${BIG_TIMEOUT:-900}
PAGE_SIZE=500

# The two directories live side by side in one slapd; each sync reads one of them.
SMALL_BASE="ou=small,$BASE_DN"
BIG_BASE="ou=big,$BASE_DN"
SMALL_DB="mailcow_small"
BIG_DB="mailcow_big"

# The directory: a service account (reader) and two organizational units,
# ou=small with $SMALL_N users a0.. (a<i>@example.org) and ou=big with $BIG_N
# users b0.. (b<i>@example.org), as tests/integration/sync.rs generates them:
# mail, displayName, otherMailbox "default" (mapped to the Default template).
write_ldif() {
  ldif_head
  python3 - "$BASE_DN" "$SMALL_N" "$BIG_N" <<'EOF'
import sys
base, small, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = sys.stdout
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

# The directory: generated and loaded (timed), then served. A directory this
# size needs the reader to be allowed past slapd's default size limit (500
# entries), as a real mailcow LDAP reader must be. Sets LDAP_PORT, SLAPD_PID.
start_slapd() {
  local t0
  t0=$(date +%s.%N)
  SLAPD_MAXSIZE=1073741824 load_slapd write_ldif \
    "limits dn.exact=\"$READER_DN\" size=unlimited time=unlimited"
  log "directory of $((SMALL_N + BIG_N)) users generated and loaded in $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)") s"
  rm -f "$WORK/slapd/data.ldif"
  run_slapd "$READER_DN" "$READER_PW"
}

# One database per directory: the mailcow schema subset, the Default template
# and a domain whose limits allow 60,000 mailboxes at its defquota (10 MiB).
create_dbs() {
  local db
  for db in "$SMALL_DB" "$BIG_DB"; do
    create_mailcow_db "$db"
    root_sql "$db" -e "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active)
        VALUES ('example.org', 60000, 10, 10240, 10240000, 1);" ||
      die "inserting the domain into $db failed"
  done
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

main() {
  check_positive "SMALL_N=$SMALL_N" "BIG_N=$BIG_N" "ROUNDS=$ROUNDS" "BIG_TIMEOUT=$BIG_TIMEOUT"
  install_packages slapd ldap-utils mariadb-server mariadb-client time
  build_binary
  make_work mailcow-ldap-bench-sync
  copy_binary

  log "load average before starting the servers: $(cut -d' ' -f1-3 /proc/loadavg)"
  start_slapd
  start_mariadb
  create_dbs
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
    --mysql-socket "$DB_SOCKET" \
    --slapd-pid "$SLAPD_PID" --mariadbd-pid "$MARIADB_PID" \
    -- "$(command -v ldapsearch)" -x -E "pr=$PAGE_SIZE/noprompt" \
    -H "ldap://127.0.0.1:$LDAP_PORT" -D "$READER_DN" -w "$READER_PW" -b "$SMALL_BASE" \
    '(&(mail=*)(otherMailbox=*))' mail otherMailbox displayName cn
}

main "$@"
