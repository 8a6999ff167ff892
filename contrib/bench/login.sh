#!/usr/bin/env bash
# Benchmark of one Dovecot checkpassword login against a private slapd.
# What it measures and how to read it: contrib/bench/README.md.
#
#   contrib/bench/login.sh                  # N=200 rounds
#   N=1000 contrib/bench/login.sh           # more rounds
#   BIN=/path/to/mailcow-ldap-auth contrib/bench/login.sh   # no build, that binary
#   KEEP_WORK=1 contrib/bench/login.sh      # keep the temporary folder (configs, slapd.log)
#
# Everything runs from a mktemp -d folder on loopback ports; slapd and the
# "silent host" are stopped by their pids when the script exits, however it exits.
# Exit status: 0 when every run worked (targets missed or not: this is a
# report), non-zero when something is broken (a login or bind failed).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

ROUNDS=${N:-200}
# connect_timeout_ms and timeout_ms of every config: what a silent host costs.
TIMEOUT_MS=500

SILENT_PID=""

# The directory: a service account (reader) and one user with a password.
write_ldif() {
  ldif_head
  ldif_ou people
  ldif_bench_user "" # no otherMailbox: no [database] here
}

# A host that accepts TCP connections (through the kernel backlog) and never
# answers: a hung directory server. Sets SILENT_PORT, SILENT_PID.
start_silent_host() {
  local portfile="$WORK/silent.port"
  python3 - "$portfile" <<'EOF' &
import os, signal, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
# Publish the port only once listening: write, then rename.
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    signal.pause()
EOF
  SILENT_PID=$!
  stop_at_exit "$SILENT_PID" "the silent host"
  local try
  for try in $(seq 500); do
    [ -s "$portfile" ] && break
    kill -0 "$SILENT_PID" 2>/dev/null || die "the silent host (pid $SILENT_PID) exited"
    sleep 0.02
  done
  [ -s "$portfile" ] || die "the silent host did not publish its port within 10 s"
  SILENT_PORT=$(cat "$portfile")
  log "silent host listens on 127.0.0.1:$SILENT_PORT (after $try polls)"
}

# write_config NAME HOSTS STATE_DIR: a config (mode 0600: it holds the
# service password) that differs between variants only in hosts and state_dir.
write_config() {
  local name=$1 hosts=$2 state_dir=$3 file="$WORK/$1.toml"
  (
    umask 077
    cat >"$file" <<EOF
# contrib/bench/login.sh: variant "$name"
state_dir = "$state_dir"
log_target = "stderr"

[ldap]
hosts = "$hosts"
base_dn = "$BASE_DN"
bind_dn = "$READER_DN"
bind_password = "$READER_PW"
connect_timeout_ms = $TIMEOUT_MS
timeout_ms = $TIMEOUT_MS
host_retry_seconds = 30
EOF
  )
  chmod 600 "$file"
}

main() {
  check_positive "N=$ROUNDS"
  install_packages slapd ldap-utils openssl time dovecot-core
  build_binary
  make_work mailcow-ldap-bench

  load_slapd write_ldif
  run_slapd "$USER_DN" "$USER_PW"
  start_silent_host
  local refused_port
  refused_port=$(free_port) # nothing listens there: connections are refused
  mkdir -m 700 "$WORK/state-plain" "$WORK/state-refused" "$WORK/state-silent"

  local good="127.0.0.1:$LDAP_PORT"
  write_config plain "$good" "$WORK/state-plain"
  write_config refused "127.0.0.1:$refused_port, $good" "$WORK/state-refused"
  # A state_dir that does not exist: no memory of failed hosts, every login tries the dead one.
  write_config refused-nomem "127.0.0.1:$refused_port, $good" "$WORK/no-such-dir"
  write_config silent "127.0.0.1:$SILENT_PORT, $good" "$WORK/state-silent"

  log "binary $BIN; $ROUNDS interleaved rounds"
  python3 "$BENCH_DIR/measure.py" \
    --bin "$BIN" --rounds "$ROUNDS" --timeout-ms "$TIMEOUT_MS" \
    --login "$USER_LOGIN" --password "$USER_PW" \
    --user-dn "$USER_DN" --ldap-url "ldap://127.0.0.1:$LDAP_PORT" \
    --work "$WORK" \
    --refused-host "127.0.0.1:$refused_port" --silent-host "127.0.0.1:$SILENT_PORT"
}

main "$@"
