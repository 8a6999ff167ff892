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

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/../.." && pwd)
ROUNDS=${N:-200}
# connect_timeout_ms and timeout_ms of every config: what a silent host costs.
TIMEOUT_MS=500

BASE_DN="dc=example,dc=org"
ADMIN_DN="cn=admin,$BASE_DN"
ADMIN_PW="adminpw"
READER_DN="cn=reader,$BASE_DN"
READER_PW="readerpw"
USER_LOGIN="bench@example.org"
USER_DN="uid=bench,ou=people,$BASE_DN"
USER_PW="bench-secret-1"

WORK=""
SLAPD_PID=""
SILENT_PID=""

log() { printf 'login.sh: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# Install the Debian packages the benchmark starts or calls, as tests/run.sh does.
install_packages() {
  local packages=(slapd ldap-utils openssl time)
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
    return 0
  fi
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) or set BIN"
  log "packaging/build-release.sh (the shipped build)"
  BIN="$REPO_DIR/$("$REPO_DIR/packaging/build-release.sh" --quiet | tail -n 1)"
  [ -x "$BIN" ] || die "the build did not produce $BIN"
}

# A loopback port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Poll until something accepts TCP connections on 127.0.0.1:$1 (process $2
# must stay alive meanwhile); give up after 10 s.
wait_for_port() {
  local port=$1 pid=$2 what=$3 try
  for try in $(seq 500); do
    if (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "$what listens on 127.0.0.1:$port (after $try polls)"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die "$what (pid $pid) exited before listening; see $WORK/slapd/slapd.log"
    sleep 0.02
  done
  die "$what did not listen on 127.0.0.1:$port within 10 s"
}

# The directory: a service account (reader) and one user with a password.
# Passwords in clear text, which slapd accepts for simple binds.
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
uid: bench
cn: Bench User
sn: User
displayName: Bench User
mail: $USER_LOGIN
userPassword: $USER_PW
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
  slapadd -f "$dir/slapd.conf" -l "$dir/data.ldif" >"$dir/slapadd.log" 2>&1 ||
    die "slapadd failed: $(cat "$dir/slapadd.log")"
  LDAP_PORT=$(free_port)
  # -d 0: stay in the foreground, so $! is slapd's own pid.
  slapd -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$LDAP_PORT/" -d 0 \
    </dev/null >/dev/null 2>"$dir/slapd.log" &
  SLAPD_PID=$!
  wait_for_port "$LDAP_PORT" "$SLAPD_PID" "slapd"
  ldapwhoami -x -H "ldap://127.0.0.1:$LDAP_PORT" -D "$USER_DN" -w "$USER_PW" >/dev/null ||
    die "ldapwhoami as $USER_DN failed against the fresh slapd"
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

# Stop what we started, by pid, and remove the temporary folder.
cleanup() {
  local status=$?
  local pid
  for pid in "$SILENT_PID" "$SLAPD_PID"; do
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
  install_packages
  build_binary

  WORK=$(mktemp -d -t mailcow-ldap-bench.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  start_slapd
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
