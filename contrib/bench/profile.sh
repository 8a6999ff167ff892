#!/usr/bin/env bash
# Profile of one-shot checkpassword logins (issue 15): where a login's time
# goes, against ldapwhoami's. What it produces and how to read it:
# contrib/bench/README.md, "Profile of a one-shot login (issue 15)".
#
#  1. step series, interleaved (profile.py steps): /bin/true, checkpassword-reply
#     alone, the helper's --version, a config read without fd 3, a wrong password,
#     the login with /bin/true and with checkpassword-reply as reply program, the
#     same over LDAPS, with [database]; ldapwhoami to a refused port, with a wrong
#     password, a whole ldapwhoami, over LDAPS. The differences are the steps.
#  2. perf stat and perf record (call graphs) over PROFILE_N spawned logins of
#     each kind (auth only, with [database], LDAPS, ldapwhoami), the samples
#     sorted into phases (profile.py fold), kernel vs user.
#  3. strace -c -f of STRACE_N runs of each kind, the tables summed.
#
#   contrib/bench/profile.sh                          # N=200 rounds, PROFILE_N=500, STRACE_N=100
#   BIN=/tmp/mla-main SYM_BIN=/path/to/unstripped contrib/bench/profile.sh
#   OUT=/tmp/mla-profile contrib/bench/profile.sh     # where the reports go (default)
#   KEEP_WORK=1 contrib/bench/profile.sh              # keep the folder (configs, perf.data)
#
# BIN is timed (steps, perf stat, strace); SYM_BIN (default BIN), a build with the
# same flags but not stripped (CARGO_PROFILE_RELEASE_STRIP=none), is the one under
# perf record, so the samples have names. Run as root on Debian 12 (perf: the
# linux-perf package). slapd and mariadbd run from a mktemp -d folder on loopback
# ports and are stopped by their pids when the script exits, however it exits.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

ROUNDS=${N:-200}
PROFILE_N=${PROFILE_N:-500}
STRACE_N=${STRACE_N:-100}
PERF_HZ=${PERF_HZ:-10000}
OUT=${OUT:-/tmp/mla-profile}
DB_NAME="mailcow"

write_ldif() {
  ldif_head
  ldif_ou people
  ldif_bench_user default
}

# slapd on two ports: plain LDAP and LDAPS (a self-signed certificate for
# 127.0.0.1, in $WORK/tls). Sets LDAP_PORT, LDAPS_PORT, SLAPD_PID.
run_slapd_tls() {
  local dir="$WORK/slapd" tls="$WORK/tls"
  mkdir -p "$tls"
  # A CA (ca.pem: what the clients trust) and the server's certificate it signs.
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=bench CA" -keyout "$tls/ca-key.pem" -out "$tls/ca.pem" &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$tls/key.pem" -out "$tls/req.pem" &&
      printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' >"$tls/ext.cnf" &&
      openssl x509 -req -in "$tls/req.pem" -CA "$tls/ca.pem" -CAkey "$tls/ca-key.pem" \
        -CAcreateserial -days 2 -extfile "$tls/ext.cnf" -out "$tls/cert.pem"
  } >"$tls/openssl.log" 2>&1 || die "openssl failed: $(tail -n 3 "$tls/openssl.log")"
  # TLS settings are global: before the database section.
  sed -i "0,/^pidfile/s||TLSCertificateFile $tls/cert.pem\nTLSCertificateKeyFile $tls/key.pem\npidfile|" \
    "$dir/slapd.conf"
  LDAP_PORT=$(free_port)
  LDAPS_PORT=$(free_port)
  slapd -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$LDAP_PORT/ ldaps://127.0.0.1:$LDAPS_PORT/" -d 0 \
    </dev/null >/dev/null 2>"$dir/slapd.log" &
  SLAPD_PID=$!
  stop_at_exit "$SLAPD_PID" slapd
  wait_for_port "$LDAP_PORT" "$SLAPD_PID" slapd "$dir/slapd.log" 30
  wait_for_port "$LDAPS_PORT" "$SLAPD_PID" slapd "$dir/slapd.log" 30
  LDAPTLS_CACERT="$tls/ca.pem" ldapwhoami -x -H "ldaps://127.0.0.1:$LDAPS_PORT" \
    -D "$USER_DN" -w "$USER_PW" >/dev/null || die "ldapwhoami over LDAPS failed"
}

# write_config NAME KIND: nodb (auth only, plain LDAP), tls (auth only, LDAPS),
# db (plain LDAP and [database] over TCP, the existing mailbox's template mapping).
write_config() {
  local name=$1 kind=$2 file="$WORK/$1.toml"
  (
    umask 077
    {
      cat <<EOF
# contrib/bench/profile.sh: variant "$name"
state_dir = "$WORK/state-$name"
log_target = "stderr"

[ldap]
base_dn = "$BASE_DN"
bind_dn = "$READER_DN"
bind_password = "$READER_PW"
connect_timeout_ms = 1000
timeout_ms = 2000
EOF
      if [ "$kind" = tls ]; then
        printf 'hosts = "127.0.0.1:%s"\nuse_ssl = true\nca_file = "%s"\n' "$LDAPS_PORT" "$WORK/tls/ca.pem"
      else
        printf 'hosts = "127.0.0.1:%s"\n' "$LDAP_PORT"
      fi
      [ "$kind" != db ] || printf 'attribute_field = "otherMailbox"\n'
      printf '\n[dovecot]\nuid = "5000"\ngid = "5000"\n'
      [ "$kind" != db ] || login_db_config "host = \"127.0.0.1\"
port = $DB_PORT"
    } >"$file"
  )
  chmod 600 "$file"
  mkdir -m 700 "$WORK/state-$name"
}

profile() { python3 "$BENCH_DIR/profile.py" "$@"; }

main() {
  check_positive "N=$ROUNDS" "PROFILE_N=$PROFILE_N" "STRACE_N=$STRACE_N" "PERF_HZ=$PERF_HZ"
  install_packages slapd ldap-utils mariadb-server mariadb-client openssl dovecot-core strace
  command -v perf >/dev/null || die "perf not found: apt-get install linux-perf"
  build_binary
  make_work mailcow-ldap-bench-profile
  copy_binary
  local sym_bin="$BIN"
  if [ -n "${SYM_BIN:-}" ]; then
    cp "$SYM_BIN" "$WORK/mailcow-ldap-auth-sym"
    sym_bin="$WORK/mailcow-ldap-auth-sym"
  fi
  mkdir -p "$OUT"
  log "reports go to $OUT; load average $(cut -d' ' -f1-3 /proc/loadavg)"

  load_slapd write_ldif
  run_slapd_tls
  start_mariadb
  create_mailcow_db "$DB_NAME"
  root_sql "$DB_NAME" -e "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active)
      VALUES ('example.org', 10, 10, 10240, 100, 1);" || die "inserting the domain failed"
  write_config nodb nodb
  write_config tls tls
  write_config db db

  local refused_port
  refused_port=$(free_port)
  local common=(--work "$WORK" --ldap-url "ldap://127.0.0.1:$LDAP_PORT"
    --ldaps-url "ldaps://127.0.0.1:$LDAPS_PORT" --refused-url "ldap://127.0.0.1:$refused_port"
    --cacert "$WORK/tls/ca.pem" --login "$USER_LOGIN" --password "$USER_PW" --user-dn "$USER_DN")
  # The mailbox of the measured user: created by its first login.
  profile loop db-login 1 --bin "$BIN" "${common[@]}" 2>/dev/null
  [ "$(root_sql "$DB_NAME" -e "SELECT COUNT(*) FROM mailbox WHERE username = '$USER_LOGIN'")" = 1 ] ||
    die "the first login did not create the mailbox"

  log "1. step series: $ROUNDS interleaved rounds (load $(cut -d' ' -f1-3 /proc/loadavg))"
  profile steps --rounds "$ROUNDS" --bin "$BIN" "${common[@]}" | tee "$OUT/steps.txt"

  local kind
  log "2. perf stat, $PROFILE_N runs of each kind (load $(cut -d' ' -f1-3 /proc/loadavg))"
  : >"$OUT/perf-stat.txt"
  for kind in true login db-login tls-login whoami; do
    {
      echo "== $kind: perf stat -e task-clock,context-switches,cpu-migrations,page-faults -- profile.py loop $kind $PROFILE_N (load $(cut -d' ' -f1-3 /proc/loadavg))"
      perf stat -e task-clock,context-switches,cpu-migrations,page-faults -- \
        python3 "$BENCH_DIR/profile.py" loop "$kind" "$PROFILE_N" --bin "$BIN" "${common[@]}" 2>&1 |
        grep -v 'driver pid'
    } >>"$OUT/perf-stat.txt" 2>&1
  done
  cat "$OUT/perf-stat.txt"

  log "3. perf record -F $PERF_HZ --call-graph dwarf, $PROFILE_N runs of each kind (binary $sym_bin)"
  for kind in login db-login tls-login whoami; do
    local data="$WORK/perf-$kind.data" pid
    log "perf record: $kind (load $(cut -d' ' -f1-3 /proc/loadavg))"
    perf record -q -F "$PERF_HZ" --call-graph dwarf,16384 -o "$data" -- \
      python3 "$BENCH_DIR/profile.py" loop "$kind" "$PROFILE_N" --bin "$sym_bin" "${common[@]}" \
      2>"$WORK/perf-$kind.err" || die "perf record ($kind) failed: $(tail -n 3 "$WORK/perf-$kind.err")"
    pid=$(sed -n 's/^profile.py: driver pid //p' "$WORK/perf-$kind.err")
    perf script -i "$data" -F comm,pid,tid,ip,sym,dso 2>/dev/null >"$WORK/perf-$kind.script"
    {
      echo "== $kind: perf record -F $PERF_HZ --call-graph dwarf,16384 -- profile.py loop $kind $PROFILE_N; profile.py fold"
      profile fold "$WORK/perf-$kind.script" "$pid" --runs "$PROFILE_N" --hz "$PERF_HZ"
      echo
      echo "-- perf report --no-children --sort comm,dso (the driver, python3, included)"
      perf report -i "$data" --no-children --sort comm,dso --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -n 25
    } >"$OUT/perf-$kind.txt"
    rm -f "$WORK/perf-$kind.script"
    cat "$OUT/perf-$kind.txt"
  done

  log "4. strace -c -f, $STRACE_N runs of each kind (load $(cut -d' ' -f1-3 /proc/loadavg))"
  for kind in login db-login tls-login whoami; do
    profile strace "$kind" "$STRACE_N" "$OUT/strace-$kind.txt" --bin "$BIN" "${common[@]}"
    head -n 30 "$OUT/strace-$kind.txt"
    echo
  done
  log "done; load average $(cut -d' ' -f1-3 /proc/loadavg); reports in $OUT"
}

main "$@"
