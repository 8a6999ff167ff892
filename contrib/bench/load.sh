#!/usr/bin/env bash
# Under load and on several hosts: checkpassword spawned as Dovecot spawns
# it with open-loop arrivals and a dead first LDAP host, every LDAP host
# silent, two hosts' syncs against replicas that disagree, first logins during
# an import. Each is measured for this build and for a baseline build, side by
# side. What it measures and how to read it: contrib/bench/LOAD.md.
#
#   BASE_BIN=/path/to/old/mailcow-ldap-auth contrib/bench/load.sh   # the baseline (required)
#   RATE=100 SECONDS_=40 contrib/bench/load.sh     # the issue's dead-first load (default 50/s, 20 s)
#   SCENARIOS=outage,import contrib/bench/load.sh  # some scenarios only
#   BIN=/path/to/mailcow-ldap-auth contrib/bench/load.sh   # no build, that binary
#   KEEP_WORK=1 contrib/bench/load.sh              # keep the temporary folder
#
# Everything runs from a mktemp -d folder on loopback ports; slapd and mariadbd
# (max_connections 151, MariaDB's default) are stopped by their pids when the
# script exits, however it exits. Exit status: 0 when every run worked (targets
# met or not: this is a report), non-zero when something is broken.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

RATE=${RATE:-50}
SECONDS_=${SECONDS_:-20}
RETRY=${RETRY:-5}
OUTAGE_RATE=${OUTAGE_RATE:-50}
OUTAGE_SECONDS=${OUTAGE_SECONDS:-10}
SYNC_N=${SYNC_N:-300}
SYNC_LACKING=${SYNC_LACKING:-150}
SYNC_ROUNDS=${SYNC_ROUNDS:-5}
IMPORT_N=${IMPORT_N:-2000}
SCENARIOS=${SCENARIOS:-dead-first,outage,two-syncs,import}
export MARIADB_MAX_CONNECTIONS=151

# The directory: the bench user (ou=people), ou=full with f0..f<SYNC_N>,
# ou=partial with the same entries but the last SYNC_LACKING (a replica that
# lacks them), ou=import with i0..i<IMPORT_N>.
write_ldif() {
  ldif_head
  ldif_ou people
  ldif_bench_user default
  python3 - "$BASE_DN" "$SYNC_N" "$SYNC_LACKING" "$IMPORT_N" <<'EOF'
import sys
base, n, lacking, imp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = sys.stdout
def users(ou, prefix, count):
    out.write(f"\ndn: ou={ou},{base}\nobjectClass: organizationalUnit\nou: {ou}\n")
    for i in range(count):
        u = f"{prefix}{i}"
        out.write(f"\ndn: uid={u},ou={ou},{base}\nobjectClass: inetOrgPerson\n"
                  f"objectClass: extensibleObject\nuid: {u}\ncn: User {u}\nsn: {u.upper()}\n"
                  f"displayName: User Number {u}\nmail: {u}@example.org\n"
                  f"otherMailbox: default\nuserPassword: pw-{u}\n")
users("full", "f", n)
users("partial", "f", n - lacking)
users("import", "i", imp)
EOF
}

main() {
  check_positive "RATE=$RATE" "SECONDS_=$SECONDS_" "RETRY=$RETRY" "SYNC_N=$SYNC_N" \
    "SYNC_ROUNDS=$SYNC_ROUNDS" "IMPORT_N=$IMPORT_N"
  [ -n "${BASE_BIN:-}" ] && [ -x "$BASE_BIN" ] ||
    die "BASE_BIN must name the baseline build (e.g. the previous release's binary)"
  install_packages slapd ldap-utils mariadb-server mariadb-client
  build_binary
  make_work mailcow-ldap-bench-load
  copy_binary
  cp "$BASE_BIN" "$WORK/baseline"
  log "baseline $BASE_BIN ($(stat -c %s "$BASE_BIN") B, copied to the work folder)"
  log "load average before starting the servers: $(cut -d' ' -f1-3 /proc/loadavg)"
  load_slapd write_ldif "limits dn.exact=\"$READER_DN\" size=unlimited time=unlimited"
  run_slapd "$READER_DN" "$READER_PW"
  start_mariadb
  python3 "$BENCH_DIR/measure_load.py" --bin "$BIN" --base-bin "$WORK/baseline" --work "$WORK" \
    --socket "$DB_SOCKET" --base "$BASE_DN" --reader-dn "$READER_DN" --reader-pw "$READER_PW" \
    --db-user "$DB_USER" --db-pw "$DB_PW" --user "$USER_LOGIN" --user-pw "$USER_PW" \
    --schema "$REPO_DIR/tests/integration/schema.sql" --template "$DEFAULT_TEMPLATE" \
    --scenarios "$SCENARIOS" --ldap-port "$LDAP_PORT" --db-port "$DB_PORT" \
    --sync-n "$SYNC_N" --sync-lacking "$SYNC_LACKING" --sync-rounds "$SYNC_ROUNDS" \
    --import-n "$IMPORT_N" --rate "$RATE" --seconds "$SECONDS_" --retry "$RETRY" \
    --outage-rate "$OUTAGE_RATE" --outage-seconds "$OUTAGE_SECONDS"
  log "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
}

main "$@"
