#!/usr/bin/env bash
# Benchmark of `mailcow-ldap-auth serve` against a private slapd: what it is and how
# to read it: contrib/bench/SERVE.md.
#
#  1. saslauthd socket: Cyrus's own `saslauthd -a ldap` and `serve` answer the same
#     client (python3, CLIENTS threads, REQUESTS logins, one connection each) against
#     the same slapd, one after the other: throughput, p50/p99 latency, CPU.
#  2. one login at a time: `serve` over HTTP (POST /auth) against `checkpassword`
#     (one process per login, as Dovecot 2.3 runs it): median and p99 latency.
#  3. contrib/bench/passdb.sh (PASSDB=0 skips it): app-password logins against
#     LDAP-password logins through serve with mailcow's database (PASSDB.md).
#
#   contrib/bench/serve.sh                        # 8 clients, 5000 requests, 200 logins
#   CLIENTS=16 REQUESTS=20000 contrib/bench/serve.sh
#   SASLAUTHD_N=5 contrib/bench/serve.sh          # saslauthd's default worker count
#   BIN=/path/to/mailcow-ldap-auth contrib/bench/serve.sh   # that binary, no build
#   KEEP_WORK=1 contrib/bench/serve.sh            # keep the folder (configs, logs)
#
# Run as root on Debian 12 (it installs slapd, ldap-utils, sasl2-bin if missing).
# Everything runs from a mktemp -d folder, slapd on a free loopback port; slapd,
# saslauthd and serve are stopped by their pids when the script exits, however it
# exits (but kill -9). Exit status: 0 when every request got the expected answer
# (goals met or not: this is a report), non-zero when something is broken.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

CLIENTS=${CLIENTS:-8}
REQUESTS=${REQUESTS:-5000}
SEQUENTIAL=${SEQUENTIAL:-200}
SASLAUTHD_N=${SASLAUTHD_N:-$CLIENTS}
WARMUP=${WARMUP:-200}

USERS=8 # bench0..bench7@example.org, password bench-secret-N

SASLAUTHD_PID=""
SERVE_PID=""
CACHE_PID=""


# The directory: a service account (reader) and USERS users.
write_ldif() {
  ldif_head
  ldif_ou people
  local i
  for i in $(seq 0 $((USERS - 1))); do
    cat <<EOF

dn: uid=bench$i,ou=people,$BASE_DN
objectClass: inetOrgPerson
uid: bench$i
cn: Bench User $i
sn: User
mail: bench$i@example.org
userPassword: bench-secret-$i
EOF
  done
}

# saslauthd_up SOCKET: whether something accepts connections on unix socket SOCKET.
saslauthd_up() {
  python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$1"
}

# serve_up: whether serve has created its socket and listens for HTTP.
serve_up() { [ -S "$SERVE_SOCKET" ] && port_open "$SERVE_HTTP_PORT"; }

# Cyrus saslauthd with its LDAP backend: search as the reader, then bind as the user
# (ldap_auth_method: bind), the same work serve does. No credential cache (-c).
start_saslauthd() {
  local dir="$WORK/saslauthd"
  mkdir -p "$dir/run"
  cat >"$dir/saslauthd.conf" <<EOF
ldap_servers: ldap://127.0.0.1:$LDAP_PORT/
ldap_search_base: $BASE_DN
ldap_filter: (mail=%u)
ldap_bind_dn: $READER_DN
ldap_password: $READER_PW
ldap_auth_method: bind
ldap_version: 3
ldap_timeout: 5
ldap_time_limit: 5
EOF
  chmod 600 "$dir/saslauthd.conf"
  # -d: foreground (so $! is its pid) and log to stderr; -n: worker processes.
  # setsid: in -d mode saslauthd ends by signalling its whole process group (it
  # calls kill() with its "master pid", which is 0 then), which would be this script.
  # setsid execs it in a session of its own, keeping the pid.
  setsid saslauthd -a ldap -O "$dir/saslauthd.conf" -m "$dir/run" -n "$SASLAUTHD_N" -d \
    </dev/null >"$dir/saslauthd.log" 2>&1 &
  SASLAUTHD_PID=$!
  stop_at_exit "$SASLAUTHD_PID" saslauthd
  SASLAUTHD_SOCKET="$dir/run/mux"
  wait_until "saslauthd -a ldap -n $SASLAUTHD_N" "is ready" "$SASLAUTHD_PID" "$dir/saslauthd.log" 10 \
    saslauthd_up "$SASLAUTHD_SOCKET"
}

# serve_instance NAME EXTRA: start one `serve` in $WORK/NAME with the same [ldap] as
# saslauthd and EXTRA lines in [serve]; sets INSTANCE_PID, INSTANCE_SOCKET, INSTANCE_PORT.
serve_instance() {
  local name=$1 extra=$2 dir="$WORK/$1"
  mkdir -p "$dir/state"
  INSTANCE_PORT=$(free_port)
  INSTANCE_SOCKET="$dir/run/mux"
  (
    umask 077
    cat >"$dir/config.toml" <<EOF
# contrib/bench/serve.sh
state_dir = "$dir/state"
log_target = "stderr"

[ldap]
hosts = "127.0.0.1:$LDAP_PORT"
base_dn = "$BASE_DN"
bind_dn = "$READER_DN"
bind_password = "$READER_PW"

[serve]
http_listen = "127.0.0.1:$INSTANCE_PORT"
saslauthd_socket = "$INSTANCE_SOCKET"
socket_mode = "0600"
$extra
EOF
  )
  "$BIN" -c "$dir/config.toml" serve </dev/null >/dev/null 2>"$dir/serve.log" &
  INSTANCE_PID=$!
  stop_at_exit "$INSTANCE_PID" "mailcow-ldap-auth serve ($name)"
  SERVE_SOCKET=$INSTANCE_SOCKET SERVE_HTTP_PORT=$INSTANCE_PORT \
    wait_until "serve ($name)" "is ready" "$INSTANCE_PID" "$dir/serve.log" 10 serve_up
}

# serve as shipped: DN cache off.
start_serve() {
  serve_instance serve ""
  SERVE_PID=$INSTANCE_PID SERVE_SOCKET=$INSTANCE_SOCKET SERVE_HTTP_PORT=$INSTANCE_PORT
}

# A second serve with the DN cache on (issue 13): the next login of a user binds
# without a search.
start_serve_dn_cache() {
  serve_instance serve-dn-cache "dn_cache_seconds = 300"
  CACHE_PID=$INSTANCE_PID CACHE_SOCKET=$INSTANCE_SOCKET
}

# The client and the report (python3: threads, one connection per request).
write_client() {
  cat >"$WORK/client.py" <<'PYEOF'
import json, os, socket, statistics, struct, subprocess, sys, threading, time

args = json.loads(sys.argv[1])
USERS = args["users"]


def login(i):
    return f"bench{i % USERS}@example.org", f"bench-secret-{i % USERS}"


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def sasl(path, user, password):
    """One saslauthd request (four length-prefixed fields); the reply text or None."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    try:
        s.connect(path)
        msg = b"".join(struct.pack(">H", len(f)) + f
                       for f in (user.encode(), password.encode(), b"smtp", b""))
        s.sendall(msg)
        head = recv_exact(s, 2)
        if head is None:
            return None
        body = recv_exact(s, struct.unpack(">H", head)[0])
        return body.decode(errors="replace") if body is not None else None
    finally:
        s.close()


def http_auth(port, user, password):
    """One POST /auth, Connection: close; the status code."""
    body = json.dumps({"username": user, "password": password,
                       "real_rip": "127.0.0.1", "service": "imap"}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
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


def cpu_ms(pid, children=False):
    """User + system CPU of pid (and its direct children), in ms, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    if children:
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    stat = open(f"/proc/{p}/stat").read()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(p))
    total = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime
    return total * 1000.0 / tick


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100.0 * (len(v) - 1))))]


def concurrent(path, clients, total):
    """clients threads share `total` requests; returns (wall s, latencies ms, errors)."""
    lat, errors, lock = [], [], threading.Lock()
    counter = iter(range(total))
    start = threading.Barrier(clients + 1)

    def worker():
        mine, bad = [], []
        start.wait()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            user, pw = login(i)
            t0 = time.perf_counter_ns()
            try:
                reply = sasl(path, user, pw)
            except OSError as e:
                reply = f"error: {e}"
            mine.append((time.perf_counter_ns() - t0) / 1e6)
            if reply != "OK":
                bad.append(f"{user}: {reply!r}")
        with lock:
            lat.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, lat, errors


def sanity(name, path):
    """Both servers really check: a wrong password and an unknown user get NO."""
    for user, pw in (("bench0@example.org", "wrong-password"), ("nobody@example.org", "x")):
        reply = sasl(path, user, pw)
        if reply is None or not reply.startswith("NO"):
            sys.exit(f"{name}: {user} with a wrong password got {reply!r}, not NO")
    user, pw = login(0)
    if sasl(path, user, pw) != "OK":
        sys.exit(f"{name}: {user} with the right password was not accepted")


def run_socket(name, path, pid, children):
    sanity(name, path)
    concurrent(path, args["clients"], args["warmup"])  # warm-up, not counted
    slapd0, own0 = cpu_ms(args["slapd_pid"]), cpu_ms(pid, children)
    client0 = time.process_time()
    wall, lat, errors = concurrent(path, args["clients"], args["requests"])
    client1 = time.process_time()
    slapd1, own1 = cpu_ms(args["slapd_pid"]), cpu_ms(pid, children)
    n = len(lat)
    return {
        "name": name, "n": n, "errors": errors, "rps": n / wall,
        "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat),
        "cpu": (own1 - own0) / n, "slapd_cpu": (slapd1 - slapd0) / n,
        "client_cpu": (client1 - client0) * 1000.0 / n,
    }


def run_sequential(name, fn, n):
    for i in range(max(1, n // 10)):  # warm-up
        fn(i)
    lat, errors = [], []
    for i in range(n):
        t0 = time.perf_counter_ns()
        ok, what = fn(i)
        lat.append((time.perf_counter_ns() - t0) / 1e6)
        if not ok:
            errors.append(what)
    return {"name": name, "n": n, "errors": errors,
            "p50": statistics.median(lat), "p99": pct(lat, 99)}


def fd3(r):
    """In the child: the credentials pipe becomes fd 3, as Dovecot hands it over."""
    if r != 3:
        os.dup2(r, 3)
        os.close(r)


def checkpassword(i):
    user, pw = login(i)
    r, w = os.pipe()
    os.write(w, f"{user}\0{pw}\0\0".encode())
    os.close(w)
    env = {"PATH": "/usr/bin:/bin", "SERVICE": "imap", "TCPREMOTEIP": "127.0.0.1",
           "PROTO": "TCP", "ORIG_UID": str(os.getuid())}
    try:
        rc = subprocess.run([args["bin"], "-c", args["cp_config"], "checkpassword", "/bin/true"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, pass_fds=(r,), env=env,
                            preexec_fn=lambda: fd3(r)).returncode
    finally:
        os.close(r)
    return rc == 0, f"{user}: checkpassword exit {rc}"


def http(i):
    user, pw = login(i)
    status = http_auth(args["http_port"], user, pw)
    return status == 200, f"{user}: HTTP {status}"


sasl_rows = [
    run_socket(f"saslauthd -a ldap (-n {args['saslauthd_n']})", args["saslauthd_socket"],
               args["saslauthd_pid"], True),
    run_socket("serve, saslauthd socket", args["serve_socket"], args["serve_pid"], False),
    run_socket("serve, DN cache on", args["cache_socket"], args["cache_pid"], False),
]
seq_rows = [
    run_sequential("checkpassword (a process per login)", checkpassword, args["sequential"]),
    run_sequential("serve, HTTP POST /auth", http, args["sequential"]),
]

print()
print(f"saslauthd protocol: {args['clients']} client threads, {args['requests']} logins "
      f"(+{args['warmup']} warm-up), one connection per login, {USERS} users, all right")
print(f"{'route':34} {'logins':>7} {'errors':>6} {'logins/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
      f"{'max ms':>8}   CPU ms per login: {'server':>6} {'slapd':>6} {'client':>6}")
for r in sasl_rows:
    print(f"{r['name']:34} {r['n']:7d} {len(r['errors']):6d} {r['rps']:9.0f} {r['p50']:8.2f} "
          f"{r['p99']:8.2f} {r['max']:8.2f} {'':19}{r['cpu']:6.3f} {r['slapd_cpu']:6.3f} "
          f"{r['client_cpu']:6.3f}")


def goals(base, off, on):
    """Issue 13's goals against saslauthd in this run: (server + slapd) CPU per login,
    throughput and p99."""
    def cost(r):
        return r["cpu"] + r["slapd_cpu"]

    def check(ok):
        return "met" if ok else "NOT met"

    cpu_off, cpu_on = cost(off) / cost(base), cost(on) / cost(base)
    rps = off["rps"] / base["rps"]
    p99_off = off["p99"] / base["p99"]
    print(f"(server + slapd) CPU ms per login: saslauthd {cost(base):.3f}, serve {cost(off):.3f}, "
          f"serve with DN cache {cost(on):.3f}")
    print(f"DN cache off: CPU x{cpu_off:.2f} (goal <= 0.5: {check(cpu_off <= 0.5)}), "
          f"throughput x{rps:.2f} (goal >= 2: {check(rps >= 2)}), "
          f"p99 x{p99_off:.2f} (goal < 1: {check(p99_off < 1)})")
    print(f"DN cache on:  CPU x{cpu_on:.2f} (goal <= 0.33: {check(cpu_on <= 0.33)}), "
          f"throughput x{on['rps'] / base['rps']:.2f}, p99 x{on['p99'] / base['p99']:.2f}")


goals(*sasl_rows[:3])
print()
print(f"one login at a time: {args['sequential']} logins each (+{max(1, args['sequential'] // 10)} warm-up)")
print(f"{'route':40} {'logins':>7} {'errors':>6} {'median ms':>10} {'p99 ms':>8}")
for r in seq_rows:
    print(f"{r['name']:40} {r['n']:7d} {len(r['errors']):6d} {r['p50']:10.2f} {r['p99']:8.2f}")
c, h = seq_rows
print(f"checkpassword / serve HTTP, median: x{c['p50'] / h['p50']:.1f}")

bad = [e for r in sasl_rows + seq_rows for e in r["errors"]]
if bad:
    print(f"\n{len(bad)} requests failed, first: {bad[:5]}", file=sys.stderr)
    sys.exit(1)
PYEOF
}

main() {
  check_positive "CLIENTS=$CLIENTS" "REQUESTS=$REQUESTS" "SEQUENTIAL=$SEQUENTIAL" \
    "SASLAUTHD_N=$SASLAUTHD_N" "WARMUP=$WARMUP"
  install_packages slapd ldap-utils sasl2-bin
  build_binary
  make_work mailcow-ldap-serve-bench

  load_slapd write_ldif
  run_slapd "uid=bench0,ou=people,$BASE_DN" bench-secret-0
  start_saslauthd
  start_serve
  start_serve_dn_cache
  # checkpassword with the same [ldap] section (serve's config, [serve] unused by it).
  write_client

  log "binary $BIN; slapd pid $SLAPD_PID, saslauthd pid $SASLAUTHD_PID, serve pid $SERVE_PID, serve (DN cache) pid $CACHE_PID"
  log "$(nproc) CPUs; everything (client, slapd, saslauthd, serve) shares them"
  python3 "$WORK/client.py" "$(
    python3 -c 'import json, sys; print(json.dumps({
        "users": int(sys.argv[1]), "clients": int(sys.argv[2]), "requests": int(sys.argv[3]),
        "warmup": int(sys.argv[4]), "sequential": int(sys.argv[5]),
        "saslauthd_n": int(sys.argv[6]), "saslauthd_socket": sys.argv[7],
        "saslauthd_pid": int(sys.argv[8]), "serve_socket": sys.argv[9],
        "serve_pid": int(sys.argv[10]), "slapd_pid": int(sys.argv[11]),
        "http_port": int(sys.argv[12]), "bin": sys.argv[13], "cp_config": sys.argv[14],
        "cache_socket": sys.argv[15], "cache_pid": int(sys.argv[16])}))' \
      "$USERS" "$CLIENTS" "$REQUESTS" "$WARMUP" "$SEQUENTIAL" "$SASLAUTHD_N" \
      "$SASLAUTHD_SOCKET" "$SASLAUTHD_PID" "$SERVE_SOCKET" "$SERVE_PID" "$SLAPD_PID" \
      "$SERVE_HTTP_PORT" "$BIN" "$WORK/serve/config.toml" "$CACHE_SOCKET" "$CACHE_PID"
  )"

  # --- mailcow's passdb: app-password against LDAP-password logins, in a script
  # of its own (contrib/bench/passdb.sh, PASSDB.md), with its own slapd, MariaDB
  # and serve; the same binary. PASSDB=0 skips it.
  if [ "${PASSDB:-1}" != 0 ]; then
    BIN="$BIN" CLIENTS="$CLIENTS" "$BENCH_DIR/passdb.sh"
  fi
}

main "$@"
