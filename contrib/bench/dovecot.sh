#!/usr/bin/env bash
# End-to-end benchmark through Dovecot 2.3: one `doveadm auth test USER PASS`
# answered by mailcow-ldap-auth (checkpassword passdb, with [database], the
# mailbox already provisioned) versus the same Dovecot with its native LDAP
# passdb (driver = ldap, auth_bind = yes) against the same slapd.
# What it measures and how to read it: contrib/bench/DOVECOT.md.
#
#   contrib/bench/dovecot.sh                 # N=200 rounds
#   N=1000 contrib/bench/dovecot.sh          # more rounds
#   BIN=/path/to/mailcow-ldap-auth contrib/bench/dovecot.sh   # that binary, no build
#   KEEP_WORK=1 contrib/bench/dovecot.sh     # keep the temporary folder (configs, logs)
#   LUA=0 contrib/bench/dovecot.sh           # without the Lua passdb + `serve` series
#
# Run as root (Dovecot runs the helper as its user `dovecot`). Everything runs
# from a mktemp -d folder on loopback ports; slapd, MariaDB and the
# Dovecot instances are stopped by their pids when the script exits, however
# it exits. Exit status: 0 when every login worked (target met or not: this is
# a report); non-zero when something is broken.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

SCHEMA="$REPO_DIR/tests/integration/schema.sql"
ROUNDS=${N:-200}
# Other people in the directory, so that the search has something to skip.
FILLER_USERS=${FILLER_USERS:-1000}


# ---------------------------------------------------------------------------
# Packages and the binary.

[ "$(id -u)" -eq 0 ] || die "run me as root (Dovecot runs the helper as user dovecot)"

install_packages slapd ldap-utils mariadb-server mariadb-client dovecot-core dovecot-ldap openssl procps python3
[ -f /usr/lib/dovecot/modules/auth/libauthdb_ldap.so ] ||
  die "Dovecot's LDAP driver (libauthdb_ldap.so) is missing: install dovecot-ldap"
[ -x /usr/lib/dovecot/checkpassword-reply ] || die "checkpassword-reply is missing (dovecot-core)"
[ -f "$SCHEMA" ] || die "$SCHEMA not found"

build_binary

# The extra series (Dovecot's Lua passdb asking `mailcow-ldap-auth serve`)
# needs dovecot-auth-lua and a binary with the serve command; it is skipped otherwise.
LUA_SCRIPT="$REPO_DIR/contrib/dovecot-lua/mailcow-ldap-auth.lua"
LUA=${LUA:-1}
if [ "$LUA" = 1 ]; then
  if [ ! -f /usr/lib/dovecot/modules/auth/libauthdb_lua.so ]; then
    log "no Lua series: install dovecot-auth-lua to include it"
    LUA=0
  elif [ ! -f "$LUA_SCRIPT" ] || ! "$BIN" --help 2>&1 | grep -q '^ *serve'; then
    log "no Lua series: this binary or checkout has no serve command / Lua script"
    LUA=0
  fi
fi

# In /tmp whatever TMPDIR says, readable by Dovecot's user.
make_work mailcow-ldap-auth-bench-dovecot /tmp
chmod 755 "$WORK"
DC_GID=$(id -g dovecot)
install -d -m 755 "$WORK/bin"
install -m 755 "$BIN" "$WORK/bin/mailcow-ldap-auth"
HELPER="$WORK/bin/mailcow-ldap-auth"

# ---------------------------------------------------------------------------
# slapd: a service account, the benchmark user and FILLER_USERS others.

write_ldif() {
  local i
  ldif_head
  ldif_ou people
  ldif_bench_user default
  for i in $(seq "$FILLER_USERS"); do
    printf '\ndn: uid=user%d,ou=people,%s\nobjectClass: inetOrgPerson\nuid: user%d\ncn: User %d\nsn: %d\nmail: user%d@example.org\nuserPassword: pw%d\n' \
      "$i" "$BASE_DN" "$i" "$i" "$i" "$i" "$i"
  done
}
load_slapd write_ldif
run_slapd "$USER_DN" "$USER_PW"

# ---------------------------------------------------------------------------
# MariaDB with mailcow's schema subset, domain example.org, template Default.

start_mariadb
create_mailcow_db mailcow
root_sql mailcow -e "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active)
                       VALUES ('example.org', 10, 1024, 10240, 102400, 1);"

# ---------------------------------------------------------------------------
# Dovecot instances, identical apart from the passdb:
#   cp     - checkpassword: mailcow-ldap-auth with [database]
#   ldap   - Dovecot's own LDAP driver, auth_bind = yes
#   static - passdb static (no directory at all): the cost of doveadm itself
#   floor  - checkpassword with a "helper" that does nothing (below)
#   lua    - unless LUA=0: Dovecot's Lua passdb asking `mailcow-ldap-auth serve`

install -d -m 700 -o dovecot -g dovecot "$WORK/helper-state"
CONF="$WORK/mailcow-ldap-auth.toml"
install -m 640 -g "$DC_GID" /dev/null "$CONF"
cat >"$CONF" <<EOF
state_dir = "$WORK/helper-state"
log_target = "stderr"

[ldap]
hosts = "127.0.0.1:$LDAP_PORT"
base_dn = "$BASE_DN"
bind_dn = "$READER_DN"
bind_password = "$READER_PW"
attribute_field = "otherMailbox"

[dovecot]
uid = "nobody"
gid = "nogroup"
home = "$WORK/vmail/%d/%n"

[database]
host = "127.0.0.1"
port = $DB_PORT
name = "mailcow"
user = "$DB_USER"
password = "$DB_PW"

[[attribute_mapping]]
attribute = "default"
template = "Default"
EOF

LDAP_EXT="$WORK/dovecot-ldap.conf.ext"
install -m 640 -g "$DC_GID" /dev/null "$LDAP_EXT"
# The same search as the helper's: service bind, (mail=<login>) under the base
# DN, subtree; then a bind as the DN found (auth_bind = yes, on its own connection).
cat >"$LDAP_EXT" <<EOF
uris = ldap://127.0.0.1:$LDAP_PORT
dn = $READER_DN
dnpass = $READER_PW
ldap_version = 3
auth_bind = yes
base = $BASE_DN
scope = subtree
pass_filter = (mail=%u)
pass_attrs = mail=user
EOF

dovecot_conf() {
  local name=$1 auth=$2
  local dir="$WORK/dovecot-$name"
  install -d -m 755 "$dir"
  cat >"$dir/dovecot.conf" <<EOF
base_dir = $dir/run
state_dir = $dir/state
instance_name = mla-bench-$name-$LDAP_PORT
log_path = $dir/dovecot.log
info_log_path = $dir/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
auth_cache_size = 0
auth_failure_delay = 0
mail_location = maildir:~/Maildir
first_valid_uid = 500
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    port = 0
  }
}
$auth
EOF
  echo "$dir"
}

CP_DIR=$(dovecot_conf cp "passdb {
  driver = checkpassword
  args = $HELPER -c $CONF checkpassword
}
userdb {
  driver = checkpassword
  args = $HELPER -c $CONF checkpassword
}")
LDAP_DIR=$(dovecot_conf ldap "passdb {
  driver = ldap
  args = $LDAP_EXT
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$WORK/vmail/%d/%n
}")
STATIC_DIR=$(dovecot_conf static "passdb {
  driver = static
  args = password=$USER_PW
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$WORK/vmail/%d/%n
}")

# The floor of the checkpassword protocol itself: a "helper" that accepts
# anyone, with no directory and no database: /bin/sh reads the request from
# fd 3 to its end (a helper that exits before Dovecot has written it makes
# Dovecot's write fail: a temporary failure), then execs the reply program.
FLOOR_HELPER="$WORK/bin/accept-anyone"
cat >"$FLOOR_HELPER" <<'SH'
#!/bin/sh
read -r _ <&3 || :
exec "$@"
SH
chmod 755 "$FLOOR_HELPER"
FLOOR_DIR=$(dovecot_conf floor "passdb {
  driver = checkpassword
  args = $FLOOR_HELPER
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$WORK/vmail/%d/%n
}")
DIRS=("$CP_DIR" "$LDAP_DIR" "$STATIC_DIR" "$FLOOR_DIR")
# serve with the checkpassword helper's settings plus [serve] and the lines
# $2, its config and log named after $1; its HTTP port in SERVED_PORT.
start_serve() {
  local name=$1 extra=$2 conf="$WORK/$1.toml"
  SERVED_PORT=$(free_port)
  install -m 640 -g "$DC_GID" /dev/null "$conf"
  { cat "$CONF"; printf '\n[serve]\nhttp_listen = "127.0.0.1:%s"\n%s' "$SERVED_PORT" "$extra"; } >"$conf"
  "$HELPER" -c "$conf" serve </dev/null >/dev/null 2>"$WORK/$name.log" &
  local pid=$!
  stop_at_exit "$pid" "mailcow-ldap-auth $name"
  wait_for_port "$SERVED_PORT" "$pid" "mailcow-ldap-auth $name" "$WORK/$name.log" 30
}

# A Dovecot config named $1 whose passdb is the blocking Lua script $2, with
# MAILCOW_LDAP_AUTH_URL set to $3 when given; prints its folder.
lua_dovecot_conf() {
  local name=$1 script=$2 url=${3:-} env=""
  [ -z "$url" ] || env="import_environment = \$import_environment MAILCOW_LDAP_AUTH_URL=$url
"
  dovecot_conf "$name" "${env}passdb {
  driver = lua
  args = file=$script blocking=yes
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$WORK/vmail/%d/%n
}"
}

LUA_DIR=""
if [ "$LUA" = 1 ]; then
  install -d -m 755 "$WORK/lua"
  install -m 644 "$LUA_SCRIPT" "$WORK/lua/mailcow-ldap-auth.lua"
  # contrib/dovecot-lua/dovecot-2.3.conf, with this run's paths (no shared
  # secret here), asking a serve with the checkpassword helper's settings ...
  start_serve serve ""
  LUA_DIR=$(lua_dovecot_conf lua "$WORK/lua/mailcow-ldap-auth.lua" "http://127.0.0.1:$SERVED_PORT")
  # ... and one with its DN cache on: no search per login.
  start_serve serve-cache "dn_cache_seconds = 300
"
  LUA_CACHE_DIR=$(lua_dovecot_conf lua-cache "$WORK/lua/mailcow-ldap-auth.lua" "http://127.0.0.1:$SERVED_PORT")
  # The floor of Dovecot's Lua passdb: the same blocking passdb in an
  # auth-worker, a script that accepts anyone without asking anything
  # (no HTTP request, no serve).
  cat >"$WORK/lua/accept-anyone.lua" <<'LUA'
function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "no lookups here"
end
function auth_password_verify(req, pass)
  return dovecot.auth.PASSDB_RESULT_OK, {}
end
LUA
  LUA_FLOOR_DIR=$(lua_dovecot_conf lua-floor "$WORK/lua/accept-anyone.lua")
  DIRS+=("$LUA_DIR" "$LUA_CACHE_DIR" "$LUA_FLOOR_DIR")
fi

for dir in "${DIRS[@]}"; do
  dovecot -c "$dir/dovecot.conf" -F </dev/null >/dev/null 2>"$dir/dovecot.stderr" &
  pid=$!
  stop_at_exit "$pid" dovecot
  wait_until "dovecot ($dir)" "is ready" "$pid" "$dir/dovecot.stderr" 30 test -S "$dir/run/auth-client"
done

# The mailbox exists before the first measured login: provision it now.
doveadm -c "$CP_DIR/dovecot.conf" auth test "$USER_LOGIN" "$USER_PW" >/dev/null ||
  die "the first login through the checkpassword instance failed; see $CP_DIR/dovecot.log"
[ "$(root_sql mailcow -e "SELECT authsource FROM mailbox WHERE username = '$USER_LOGIN'")" = ldap ] ||
  die "the first login did not provision $USER_LOGIN"

# ---------------------------------------------------------------------------
# Measure.

ROUNDS="$ROUNDS" USER_LOGIN="$USER_LOGIN" USER_PW="$USER_PW" \
  CP_CONF="$CP_DIR/dovecot.conf" LDAP_CONF="$LDAP_DIR/dovecot.conf" STATIC_CONF="$STATIC_DIR/dovecot.conf" \
  FLOOR_CONF="$FLOOR_DIR/dovecot.conf" LUA_CONF="${LUA_DIR:+$LUA_DIR/dovecot.conf}" \
  LUA_CACHE_CONF="${LUA_CACHE_DIR:+$LUA_CACHE_DIR/dovecot.conf}" LUA_FLOOR_CONF="${LUA_FLOOR_DIR:+$LUA_FLOOR_DIR/dovecot.conf}" \
  CP_LOG="$CP_DIR/dovecot.log" BIN_SHOWN="$BIN" FILLER_USERS="$FILLER_USERS" \
  python3 - <<'EOF'
import os, re, statistics, subprocess, sys, time

rounds = int(os.environ["ROUNDS"])
user, pw = os.environ["USER_LOGIN"], os.environ["USER_PW"]
series = {
    "checkpassword": os.environ["CP_CONF"],
    "native ldap": os.environ["LDAP_CONF"],
    "static": os.environ["STATIC_CONF"],
    "checkpassword floor": os.environ["FLOOR_CONF"],
}
if os.environ.get("LUA_CONF"):
    series["lua + serve"] = os.environ["LUA_CONF"]
    series["lua + serve, DN cache"] = os.environ["LUA_CACHE_CONF"]
    series["lua floor"] = os.environ["LUA_FLOOR_CONF"]

def once(conf):
    t0 = time.perf_counter_ns()
    r = subprocess.run(["doveadm", "-c", conf, "auth", "test", user, pw],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ms = (time.perf_counter_ns() - t0) / 1e6
    if r.returncode != 0 or b"auth succeeded" not in r.stdout:
        sys.exit(f"doveadm -c {conf} auth test failed ({r.returncode}):\n"
                 f"{r.stdout.decode()}{r.stderr.decode()}")
    return ms

names = list(series)
for name in names:          # warm-up, not counted
    for _ in range(10):
        once(series[name])

log_from = os.path.getsize(os.environ["CP_LOG"])
times = {n: [] for n in names}
ratio = []                  # per round: checkpassword / native ldap
over = []                   # per round: (checkpassword - static) / (native ldap - static)
lua_ratio = {}              # per round: lua series / native ldap
for i in range(rounds):
    k = i % len(names)      # rotate the order each round
    got = {}
    for name in names[k:] + names[:k]:
        got[name] = once(series[name])
        times[name].append(got[name])
    ratio.append(got["checkpassword"] / got["native ldap"])
    for name in ("lua + serve", "lua + serve, DN cache"):
        if name in got:
            lua_ratio.setdefault(name, []).append(got[name] / got["native ldap"])
    d = got["native ldap"] - got["static"]
    if d > 0:
        over.append((got["checkpassword"] - got["static"]) / d)

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]

print(f"doveadm auth test {user}: {rounds} interleaved rounds (order rotating), "
      f"{1 + int(os.environ['FILLER_USERS'])} users in the directory, auth cache off")
print(f"binary: {os.environ['BIN_SHOWN']}")
print()
print(f"{'series (wall ms per doveadm run)':34} {'min':>7} {'p10':>7} {'median':>7} {'p90':>7} {'max':>7}")
for name in names:
    v = times[name]
    print(f"{name:34} {min(v):7.2f} {pct(v, 10):7.2f} {statistics.median(v):7.2f} "
          f"{pct(v, 90):7.2f} {max(v):7.2f}")
med = {n: statistics.median(times[n]) for n in names}
print()
r_med = med["checkpassword"] / med["native ldap"]
r_round = statistics.median(ratio)
print(f"ratio checkpassword / native ldap, medians:          {r_med:.2f}x")
print(f"ratio checkpassword / native ldap, per-round median: {r_round:.2f}x   (target <= 1.50x)")
print(f"auth cost above doveadm alone (median - static median): "
      f"checkpassword {med['checkpassword'] - med['static']:.2f} ms, "
      f"native ldap {med['native ldap'] - med['static']:.2f} ms")
if over:
    print(f"  ratio of those costs, per-round median: {statistics.median(over):.2f}x")

# The helper's own time, from its log lines (ms=, whole milliseconds).
with open(os.environ["CP_LOG"], errors="replace") as f:
    f.seek(log_from)
    ms = [int(m) for m in re.findall(r'service=doveadm .*result=accept .* ms=(\d+)', f.read())]
print(f"checkpassword floor (sh reads fd 3, execs checkpassword-reply) above static: "
      f"{med['checkpassword floor'] - med['static']:.2f} ms; "
      f"floor / native ldap, medians: {med['checkpassword floor'] / med['native ldap']:.2f}x")
# Issue 15's two figures for the checkpassword route.
print(f"issue 15: whole run checkpassword / native ldap, per-round median {r_round:.2f}x (goal <= 1.30x); "
      f"own cost above the checkpassword floor (median - floor median) "
      f"{med['checkpassword'] - med['checkpassword floor']:.2f} ms (goal <= 1.50 ms)")
if "lua + serve" in med:
    print()
    for name in ("lua + serve", "lua + serve, DN cache"):
        print(f"ratio {name} / native ldap, per-round median: {statistics.median(lua_ratio[name]):.2f}x "
              f"(medians {med[name] / med['native ldap']:.2f}x; target <= 1.00x)")
    static = med["static"]
    print(f"cost above doveadm alone: lua + serve {med['lua + serve'] - static:.2f} ms, "
          f"with DN cache {med['lua + serve, DN cache'] - static:.2f} ms, "
          f"lua floor {med['lua floor'] - static:.2f} ms, native ldap {med['native ldap'] - static:.2f} ms")
    print(f"  lua floor / native ldap, medians: {med['lua floor'] / med['native ldap']:.2f}x "
          f"(Dovecot's blocking Lua passdb answering at once: what no server behind it can remove)")
    print(f"  lua + serve above lua floor: {med['lua + serve'] - med['lua floor']:.2f} ms "
          f"(the HTTP request and serve's decision), native ldap above static: "
          f"{med['native ldap'] - static:.2f} ms")
if ms:
    print(f"helper's own time per login (its log's ms=, {len(ms)} lines): "
          f"median {statistics.median(ms):.0f} ms, p90 {pct(ms, 90)} ms")
print()
print("RESULT: target met" if r_round <= 1.5 else "RESULT: target missed",
      f"({r_round:.2f}x <= 1.50x)" if r_round <= 1.5 else f"({r_round:.2f}x > 1.50x)")
EOF
