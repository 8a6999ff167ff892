#!/usr/bin/env bash
# Soak test of `mailcow-ldap-auth serve` against a private slapd: mixed logins
# (right password, wrong password, unknown user) on both listeners (HTTP with
# keep-alive, the saslauthd socket) while idle and one-byte-a-second clients
# hold connections on both, for DURATION seconds. Every INTERVAL seconds it
# prints serve's RSS, open descriptors and threads, and the logins' count,
# errors, p50 and p99 in that interval; at the end the first and last figures.
#
#   contrib/bench/soak.sh              # 600 s (10 minutes), one line a minute
#   contrib/bench/soak.sh 180          # 3 minutes
#   INTERVAL=30 HTTP_CLIENTS=4 SASL_CLIENTS=2 IDLE=200 SLOW=50 contrib/bench/soak.sh
#   BIN=/path/to/mailcow-ldap-auth contrib/bench/soak.sh   # that binary, no build
#
# Flat means: RSS, descriptors and threads the same from the second interval
# on (the first one warms the pools), zero errors, p99 steady. An error is any
# answer other than the expected one (200/OK, 401/NO) or a login that failed.
# Run as root on Debian 12 (it installs slapd and ldap-utils if missing).
# Everything runs from a mktemp -d folder, on loopback only; slapd and serve
# are stopped by their pids when the script exits. Exit status: 0 when every
# login got the expected answer, 1 otherwise.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

DURATION=${1:-${DURATION:-600}}
INTERVAL=${INTERVAL:-60}
HTTP_CLIENTS=${HTTP_CLIENTS:-4}
SASL_CLIENTS=${SASL_CLIENTS:-2}
IDLE=${IDLE:-200}
SLOW=${SLOW:-50}
USERS=8 # soak0..soak7@example.org, password soak-secret-N

write_ldif() {
  ldif_head
  ldif_ou people
  local i
  for i in $(seq 0 $((USERS - 1))); do
    cat <<EOF

dn: uid=soak$i,ou=people,$BASE_DN
objectClass: inetOrgPerson
uid: soak$i
cn: Soak User $i
sn: User
mail: soak$i@example.org
userPassword: soak-secret-$i
EOF
  done
}

serve_up() { [ -S "$SOCKET" ] && port_open "$HTTP_PORT" && port_open "$METRICS_PORT"; }

start_serve() {
  local dir="$WORK/serve"
  mkdir -p "$dir/state"
  HTTP_PORT=$(free_port)
  METRICS_PORT=$(free_port)
  SOCKET="$dir/run/mux"
  (
    umask 077
    cat >"$dir/config.toml" <<EOF
# contrib/bench/soak.sh
state_dir = "$dir/state"
log_target = "stderr"

[ldap]
hosts = "127.0.0.1:$LDAP_PORT"
base_dn = "$BASE_DN"
bind_dn = "$READER_DN"
bind_password = "$READER_PW"

[serve]
http_listen = "127.0.0.1:$HTTP_PORT"
saslauthd_socket = "$SOCKET"
socket_mode = "0600"
metrics_listen = "127.0.0.1:$METRICS_PORT"
EOF
  )
  "$BIN" -c "$dir/config.toml" serve </dev/null >/dev/null 2>"$dir/serve.log" &
  SERVE_PID=$!
  stop_at_exit "$SERVE_PID" "mailcow-ldap-auth serve"
  wait_until "serve" "is ready" "$SERVE_PID" "$dir/serve.log" 10 serve_up
}

write_client() {
  cat >"$WORK/soak.py" <<'PY'
import http.client, json, os, random, socket, struct, sys, threading, time

cfg = json.loads(sys.argv[1])
PID, PORT, SOCK, USERS = cfg["pid"], cfg["http_port"], cfg["socket"], cfg["users"]
END = time.monotonic() + cfg["duration"]
lock = threading.Lock()
samples = []  # (latency seconds, ok) since the last report
totals = {"logins": 0, "errors": 0}
first_errors = []


def pick(rng):
    """(login, password, expect_success): 60 % right, 25 % wrong, 15 % unknown."""
    i = rng.randrange(USERS)
    r = rng.random()
    if r < 0.60:
        return f"soak{i}@example.org", f"soak-secret-{i}", True
    if r < 0.85:
        return f"soak{i}@example.org", "wrong-password", False
    return f"nobody{rng.randrange(10**6)}@example.org", "whatever", False


def note(took, ok, what):
    with lock:
        samples.append((took, ok))
        totals["logins"] += 1
        if not ok:
            totals["errors"] += 1
            if len(first_errors) < 5:
                first_errors.append(what)


def http_client(seed):
    rng = random.Random(seed)
    conn = None
    while time.monotonic() < END:
        login, pw, good = pick(rng)
        body = json.dumps({"username": login, "password": pw, "service": "imap", "real_rip": "192.0.2.1"})
        t = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
            conn.request("POST", "/auth", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            status = r.status
        except Exception as e:  # a broken keep-alive connection counts as an error
            status = f"{type(e).__name__}: {e}"
            conn = None
        ok = status == (200 if good else 401)
        note(time.monotonic() - t, ok, f"http {login}: {status}")


def sasl_once(login, pw):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    try:
        s.connect(SOCK)
        msg = b"".join(struct.pack(">H", len(f)) + f for f in (login.encode(), pw.encode(), b"smtp", b""))
        s.sendall(msg)
        head = s.recv(2)
        if len(head) < 2:
            return "closed"
        n = struct.unpack(">H", head)[0]
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data.decode()
    finally:
        s.close()


def sasl_client(seed):
    rng = random.Random(seed)
    while time.monotonic() < END:
        login, pw, good = pick(rng)
        t = time.monotonic()
        try:
            answer = sasl_once(login, pw)
        except Exception as e:
            answer = f"{type(e).__name__}: {e}"
        ok = answer.startswith("OK") if good else answer.startswith("NO")
        note(time.monotonic() - t, ok, f"saslauthd {login}: {answer}")


def attackers():
    """IDLE silent and SLOW one-byte-a-second connections on each listener,
    reopened when serve closes them (at its deadlines)."""
    http_script = b"POST /auth HTTP/1.1\r\nHost: soak\r\nContent-Length: 60\r\n\r\n{\"username\":"
    sasl_script = b"\x00\x04soak\x00\x07secret1\x00\x04smtp\x00"
    clients = [("tcp", False)] * cfg["idle"] + [("tcp", True)] * cfg["slow"] \
        + [("unix", False)] * cfg["idle"] + [("unix", True)] * cfg["slow"]
    socks = [None] * len(clients)
    sent = [0] * len(clients)
    reopened = 0

    def open_one(kind):
        s = socket.socket(socket.AF_INET if kind == "tcp" else socket.AF_UNIX)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", PORT) if kind == "tcp" else SOCK)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            s.close()
            return None
        return s

    while time.monotonic() < END:
        for i, (kind, slow) in enumerate(clients):
            s = socks[i]
            alive = s is not None
            if alive:
                try:
                    if s.recv(512) == b"":
                        alive = False
                    else:
                        alive = False  # serve answered (408/400): done with it
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    alive = False
            if alive and slow:
                script = http_script if kind == "tcp" else sasl_script
                try:
                    s.send(script[sent[i] % (len(script) - 1):][:1])
                    sent[i] += 1
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    alive = False
            if not alive:
                if s is not None:
                    s.close()
                    reopened += 1
                socks[i] = open_one(kind)
                sent[i] = 0
        time.sleep(1)  # the attack's pace: one byte a second
    for s in socks:
        if s is not None:
            s.close()
    with lock:
        totals["reopened"] = reopened


def proc(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


threads = [threading.Thread(target=http_client, args=(i,), daemon=True) for i in range(cfg["http_clients"])]
threads += [threading.Thread(target=sasl_client, args=(100 + i,), daemon=True) for i in range(cfg["sasl_clients"])]
threads.append(threading.Thread(target=attackers, daemon=True))
for t in threads:
    t.start()

print(f"{'t (s)':>6} {'logins':>7} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'RSS kB':>8} {'fds':>5} {'threads':>7}", flush=True)
rows = []
start = time.monotonic()
while True:
    left = END - time.monotonic()
    time.sleep(max(0.0, min(cfg["interval"], left)))
    with lock:
        batch = samples[:]
        samples.clear()
    rss, fds, tasks = proc(PID)
    lat = [s[0] * 1000 for s in batch]
    errs = sum(1 for s in batch if not s[1])
    row = (round(time.monotonic() - start), len(batch), errs, pct(lat, 0.5), pct(lat, 0.99), rss, fds, tasks)
    rows.append(row)
    print(f"{row[0]:>6} {row[1]:>7} {row[2]:>6} {row[3]:>7.2f} {row[4]:>7.2f} {row[5]:>8} {row[6]:>5} {row[7]:>7}", flush=True)
    if time.monotonic() >= END:
        break
for t in threads:
    t.join(timeout=60)

metrics = http.client.HTTPConnection("127.0.0.1", cfg["metrics_port"], timeout=10)
metrics.request("GET", "/metrics")
text = metrics.getresponse().read().decode()
refused = [l for l in text.splitlines() if l.startswith("mailcow_ldap_auth_refused_total")]
panics = [l for l in text.splitlines() if l.startswith("mailcow_ldap_auth_panics")]
print()
print(f"logins {totals['logins']}, errors {totals['errors']}; the attack reopened {totals.get('reopened', 0)} connections closed at serve's deadlines")
if len(rows) >= 2:
    a, b = rows[1] if len(rows) > 2 else rows[0], rows[-1]
    print(f"from the 2nd interval to the last: RSS {a[5]} -> {b[5]} kB, fds {a[6]} -> {b[6]}, threads {a[7]} -> {b[7]}")
print("p99 per interval (ms): " + ", ".join(f"{r[4]:.1f}" for r in rows))
for l in refused + panics:
    print("  " + l)
for e in first_errors:
    print("  error: " + e)
sys.exit(1 if totals["errors"] else 0)
PY
}

main() {
  check_positive "DURATION=$DURATION" "INTERVAL=$INTERVAL" "HTTP_CLIENTS=$HTTP_CLIENTS" "SASL_CLIENTS=$SASL_CLIENTS"
  install_packages slapd ldap-utils
  build_binary
  make_work mailcow-ldap-serve-soak
  copy_binary
  load_slapd write_ldif
  run_slapd "uid=soak0,ou=people,$BASE_DN" soak-secret-0
  start_serve
  write_client
  log "serve pid $SERVE_PID; $DURATION s, a line every $INTERVAL s; $HTTP_CLIENTS HTTP + $SASL_CLIENTS saslauthd clients, $IDLE idle + $SLOW slow connections on each listener; $(nproc) CPUs shared by all"
  python3 "$WORK/soak.py" "$(
    python3 -c 'import json, sys; a = sys.argv[1:]; print(json.dumps({
        "pid": int(a[0]), "http_port": int(a[1]), "socket": a[2], "metrics_port": int(a[3]),
        "users": int(a[4]), "duration": int(a[5]), "interval": int(a[6]),
        "http_clients": int(a[7]), "sasl_clients": int(a[8]), "idle": int(a[9]), "slow": int(a[10])}))' \
      "$SERVE_PID" "$HTTP_PORT" "$SOCKET" "$METRICS_PORT" "$USERS" "$DURATION" "$INTERVAL" \
      "$HTTP_CLIENTS" "$SASL_CLIENTS" "$IDLE" "$SLOW"
  )"
}

main "$@"
