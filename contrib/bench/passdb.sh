#!/usr/bin/env bash
# Benchmark of mailcow's passdb in `mailcow-ldap-auth serve` (`[mailcow] passdb =
# "full"`): an app-password login against an LDAP-password login, both over HTTP
# (POST /auth, as the Lua passdb asks), against the same serve, MariaDB and slapd.
# What it is and how to read it: contrib/bench/PASSDB.md. Run by serve.sh too.
#
# An app-password login never reaches the directory: it is bounded by the hash
# (mailcow's app passwords are bcrypt, PHP's password_hash() cost 10), not by
# LDAP. The report names the bcrypt cost factor read from the hash measured.
#
#   contrib/bench/passdb.sh                  # 2 clients, 400 logins per row
#   CLIENTS=8 REQUESTS=5000 contrib/bench/passdb.sh
#   BCRYPT_COST=12 contrib/bench/passdb.sh   # another cost factor (4..31)
#   BIN=/path/to/mailcow-ldap-auth contrib/bench/passdb.sh   # that binary, no build
#   KEEP_WORK=1 contrib/bench/passdb.sh      # keep the folder (configs, logs)
#
# Run as root on Debian 12 (installs slapd, ldap-utils, mariadb-server,
# mariadb-client, dovecot-core (for `doveadm pw`) if missing). Everything runs from
# a mktemp -d folder on loopback ports; slapd, MariaDB and serve are stopped by
# their pids when the script exits. Exit status: 0 when every login got the
# expected answer (this is a report, not a pass/fail), non-zero when broken.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

CLIENTS=${CLIENTS:-2}
REQUESTS=${REQUESTS:-400}
WARMUP=${WARMUP:-40}
BCRYPT_COST=${BCRYPT_COST:-10}
# bench0..bench15@example.org, LDAP password bench-secret-N; bench0..bench7 also
# have one app password each, bench-app-N; bench8..bench15 have none.
USERS=16
WITH_APP=8

write_ldif() {
  ldif_head
  ldif_ou people
  local i
  for i in $(seq 0 $((USERS - 1))); do
    printf '\ndn: uid=bench%s,ou=people,%s\nobjectClass: inetOrgPerson\nuid: bench%s\ncn: Bench User %s\nsn: User\nmail: bench%s@example.org\nuserPassword: bench-secret-%s\n' \
      "$i" "$BASE_DN" "$i" "$i" "$i" "$i"
  done
}

# USERS mailboxes of authsource ldap; the first WITH_APP with one active app
# password each (bcrypt, BCRYPT_COST, as `doveadm pw` and PHP's password_hash() write it).
fill_mailcow_db() {
  local i hash
  root_sql mailcow -e "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active)
                         VALUES ('example.org', 100, 1024, 10240, 102400, 1);"
  for i in $(seq 0 $((USERS - 1))); do
    root_sql mailcow -e "INSERT INTO mailbox (username, password, name, local_part, domain, attributes, authsource, active)
                           VALUES ('bench$i@example.org', '', 'Bench $i', 'bench$i', 'example.org', '{}', 'ldap', 1);"
    [ "$i" -lt "$WITH_APP" ] || continue
    hash=$(doveadm pw -s BLF-CRYPT -r "$BCRYPT_COST" -p "bench-app-$i")
    [[ "$hash" == "{BLF-CRYPT}\$2"* ]] || die "doveadm pw gave no bcrypt hash: $hash"
    APP_HASH=$hash
    root_sql mailcow -e "INSERT INTO app_passwd (name, mailbox, domain, password, active)
                           VALUES ('bench', 'bench$i@example.org', 'example.org', '$hash', 1);"
  done
}

start_serve() {
  local dir="$WORK/serve"
  mkdir -p "$dir/state"
  SERVE_HTTP_PORT=$(free_port)
  (
    umask 077
    cat >"$dir/config.toml" <<EOF
# contrib/bench/passdb.sh
state_dir = "$dir/state"
log_target = "stderr"

[ldap]
hosts = "127.0.0.1:$LDAP_PORT"
base_dn = "$BASE_DN"
bind_dn = "$READER_DN"
bind_password = "$READER_PW"

[database]
host = "127.0.0.1"
port = $DB_PORT
name = "mailcow"
user = "$DB_USER"
password = "$DB_PW"

[provisioning]
login_provisioning = false

[mailcow]
passdb = "full"

[serve]
http_listen = "127.0.0.1:$SERVE_HTTP_PORT"
EOF
  )
  "$BIN" -c "$dir/config.toml" serve </dev/null >/dev/null 2>"$dir/serve.log" &
  SERVE_PID=$!
  stop_at_exit "$SERVE_PID" "mailcow-ldap-auth serve"
  wait_for_port "$SERVE_HTTP_PORT" "$SERVE_PID" serve "$dir/serve.log" 10
}

write_client() {
  cat >"$WORK/client.py" <<'PYEOF'
import json, os, socket, sys, threading, time

args = json.loads(sys.argv[1])
USERS = args["users"]
WITH_APP = args["with_app"]


def http_auth(user, password):
    body = json.dumps({"username": user, "password": password,
                       "real_rip": "127.0.0.1", "service": "imap"}).encode()
    s = socket.create_connection(("127.0.0.1", args["port"]), timeout=30)
    try:
        s.sendall(b"POST /auth HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0
    finally:
        s.close()


def cpu_ms(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100.0 * (len(v) - 1))))]


def concurrent(users, password_of, total):
    lat, errors, lock = [], [], threading.Lock()
    counter = iter(range(total))
    start = threading.Barrier(args["clients"] + 1)

    def worker():
        mine, bad = [], []
        start.wait()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            u = users[i % len(users)]
            user = f"bench{u}@example.org"
            t0 = time.perf_counter_ns()
            try:
                status = http_auth(user, password_of(u))
            except OSError as e:
                status = f"error {e}"
            mine.append((time.perf_counter_ns() - t0) / 1e6)
            if status != 200:
                bad.append(f"{user}: {status}")
        with lock:
            lat.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=worker) for _ in range(args["clients"])]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, lat, errors


def run(name, users, password_of):
    concurrent(users, password_of, args["warmup"])
    serve0, slapd0 = cpu_ms(args["serve_pid"]), cpu_ms(args["slapd_pid"])
    wall, lat, errors = concurrent(users, password_of, args["requests"])
    serve1, slapd1 = cpu_ms(args["serve_pid"]), cpu_ms(args["slapd_pid"])
    n = len(lat)
    return {"name": name, "n": n, "errors": errors, "rps": n / wall, "p50": pct(lat, 50),
            "p99": pct(lat, 99), "serve_cpu": (serve1 - serve0) / n,
            "slapd_cpu": (slapd1 - slapd0) / n}


# Both routes really check: wrong passwords are refused.
for pw in ("wrong-password", "bench-app-1"):
    if http_auth("bench0@example.org", pw) != 401:
        sys.exit(f"bench0 with {pw!r} was not refused")

# LDAP, app password, LDAP again: a drift (a warming cache, a neighbour's load)
# shows as a difference between the two LDAP rows. mailcow's order checks the
# mailbox's app passwords before the bind, so an LDAP password of a mailbox with
# an app password pays one bcrypt verification too: a row of its own.
plain = list(range(WITH_APP, USERS))
with_app = list(range(WITH_APP))
cost = args["cost"]
rows = [
    run("LDAP password, no app passwords", plain, lambda u: f"bench-secret-{u}"),
    run(f"app password (bcrypt cost {cost})", with_app, lambda u: f"bench-app-{u}"),
    run("LDAP password, 1 app password", with_app, lambda u: f"bench-secret-{u}"),
    run("LDAP password, no app pw., again", plain, lambda u: f"bench-secret-{u}"),
]
print()
print(f"serve POST /auth, passdb = \"full\": {args['clients']} client threads, {args['requests']} logins "
      f"per row (+{args['warmup']} warm-up), {USERS} mailboxes ({WITH_APP} with an app password); app passwords {args['hash_prefix']}... "
      f"(bcrypt cost factor {args['cost']})")
print(f"{'route':36} {'logins':>7} {'errors':>6} {'logins/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
      f"   CPU ms per login: {'serve':>6} {'slapd':>6}")
for r in rows:
    print(f"{r['name']:36} {r['n']:7d} {len(r['errors']):6d} {r['rps']:9.0f} {r['p50']:8.2f} "
          f"{r['p99']:8.2f} {'':19}{r['serve_cpu']:6.3f} {r['slapd_cpu']:6.3f}")
ldap = {"rps": (rows[0]["rps"] + rows[3]["rps"]) / 2, "p99": (rows[0]["p99"] + rows[3]["p99"]) / 2}
app = rows[1]
print(f"app password / LDAP password (mean of the two rows without app passwords): logins/s x{app['rps'] / ldap['rps']:.2f}, "
      f"p99 x{app['p99'] / ldap['p99']:.2f}; slapd CPU per app-password login "
      f"{app['slapd_cpu']:.3f} ms (0: the directory is not asked)")
bad = [e for r in rows for e in r["errors"]]
if bad:
    print(f"\n{len(bad)} logins failed, first: {bad[:5]}", file=sys.stderr)
    sys.exit(1)
PYEOF
}

main() {
  check_positive "CLIENTS=$CLIENTS" "REQUESTS=$REQUESTS" "WARMUP=$WARMUP" "BCRYPT_COST=$BCRYPT_COST"
  [ "$BCRYPT_COST" -ge 4 ] && [ "$BCRYPT_COST" -le 31 ] || die "BCRYPT_COST=$BCRYPT_COST: bcrypt's cost is 4..31"
  install_packages slapd ldap-utils mariadb-server mariadb-client dovecot-core
  build_binary
  make_work mailcow-ldap-passdb-bench
  copy_binary

  load_slapd write_ldif
  run_slapd "uid=bench0,ou=people,$BASE_DN" bench-secret-0
  start_mariadb
  create_mailcow_db mailcow
  fill_mailcow_db
  start_serve
  write_client
  # The cost factor as the hash says it: {BLF-CRYPT}$2y$NN$...
  local cost=${APP_HASH#\{BLF-CRYPT\}\$2?\$}
  cost=${cost%%\$*}

  log "binary $BIN; slapd pid $SLAPD_PID, mariadbd pid $MARIADB_PID, serve pid $SERVE_PID"
  log "$(nproc) CPUs; everything (client, slapd, MariaDB, serve) shares them"
  python3 "$WORK/client.py" "$(
    python3 -c 'import json, sys; print(json.dumps({
        "users": int(sys.argv[1]), "clients": int(sys.argv[2]), "requests": int(sys.argv[3]),
        "warmup": int(sys.argv[4]), "port": int(sys.argv[5]), "serve_pid": int(sys.argv[6]),
        "slapd_pid": int(sys.argv[7]), "cost": int(sys.argv[8]), "hash_prefix": sys.argv[9],
        "with_app": int(sys.argv[10])}))' \
      "$USERS" "$CLIENTS" "$REQUESTS" "$WARMUP" "$SERVE_HTTP_PORT" "$SERVE_PID" "$SLAPD_PID" \
      "$((10#$cost))" "${APP_HASH:0:18}" "$WITH_APP"
  )"
}

main "$@"
