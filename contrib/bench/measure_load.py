#!/usr/bin/env python3
"""The measuring half of contrib/bench/load.sh (see LOAD.md): under load and
on several hosts, for this build and a baseline build, side by side.

Scenarios (each on its own database of the private MariaDB):
  dead-first   open-loop logins with the first LDAP host dead (accepts TCP,
               never answers): refusals (111), "Too many connections",
               logins that touched the dead host per retry window, p50/p99.
  outage       open-loop logins with every LDAP host silent: all must be
               111; the most database connections in use (Max_used_connections
               after FLUSH STATUS, on a server nothing else uses).
  two-syncs    two hosts' syncs at once, one reading a replica that lacks
               users: rounds whose result no serial order of the runs gives,
               present users left inactive after a final full run.
  import       first logins while a 2,000-user page is imported: the slowest
               login's own decision time (its log line's ms=).
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time


class DeadHost:
    """Accepts TCP connections, counts them, holds them open, never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.accepted = []  # times of accept
        self.held = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            self.held.append(c)


class Bench:
    def __init__(self, a):
        self.a = a

    def sql(self, db, query):
        out = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={self.a.socket}", "-uroot", "--batch",
             "--skip-column-names", db, "-e", query],
            check=True, capture_output=True, text=True).stdout
        return out.strip()

    def config(self, name, db, hosts, ldap_extra="", rest=""):
        path = f"{self.a.work}/{name}.toml"
        hosts = ", ".join(f'"{h}"' for h in hosts)
        text = f"""state_dir = "{self.a.work}/state-{name}"
log_target = "stderr"

[ldap]
hosts = [{hosts}]
base_dn = "{self.a.base}"
bind_dn = "{self.a.reader_dn}"
bind_password = "{self.a.reader_pw}"
attribute_field = "otherMailbox"
{ldap_extra}

[database]
host = "127.0.0.1"
port = {self.a.db_port}
name = "{db}"
user = "{self.a.db_user}"
password = "{self.a.db_pw}"
connect_timeout_ms = 2000

[dovecot]
uid = "5000"
gid = "5000"

[[attribute_mapping]]
attribute = "default"
template = "Default"

{rest}
"""
        import os
        os.makedirs(f"{self.a.work}/state-{name}", mode=0o700, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    def login(self, binary, cfg, user, password):
        """One checkpassword run as Dovecot makes it; (exit code, stderr, wall ms)."""
        t0 = time.monotonic()
        p = subprocess.run(
            ["bash", "-c", 'exec 3<&0 0</dev/null; exec "$@"', "bash", binary, "-c", cfg,
             "checkpassword", "/bin/true"],
            input=f"{user}\0{password}\0\0".encode(), capture_output=True,
            env={"SERVICE": "imap", "TCPREMOTEIP": "127.0.0.1", "PATH": "/usr/bin:/bin"})
        return p.returncode, p.stderr.decode(errors="replace"), (time.monotonic() - t0) * 1e3

    def open_loop(self, binary, cfg, rate, seconds, user_of):
        """Logins started at `rate` per second for `seconds` (a slow one never
        delays the next). Returns [(start, code, stderr, ms)]."""
        n = int(rate * seconds)
        results = [None] * n
        start = time.monotonic()

        def one(i):
            at = start + i / rate
            time.sleep(max(0.0, at - time.monotonic()))
            u, pw = user_of(i)
            code, err, ms = self.login(binary, cfg, u, pw)
            results[i] = (at - start, code, err, ms)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def fresh_db(self, name):
        self.sql("", f"DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;"
                     f"GRANT ALL ON `{name}`.* TO '{self.a.db_user}'@'127.0.0.1'; GRANT ALL ON `{name}`.* TO '{self.a.db_user}'@'localhost';")
        with open(self.a.schema) as f:
            subprocess.run(["mariadb", "--no-defaults", f"--socket={self.a.socket}", "-uroot", name],
                           stdin=f, check=True)
        self.sql(name, f"INSERT INTO templates (template, type, attributes) VALUES ('Default', 'mailbox', '{self.a.template}');"
                       "INSERT INTO domain (domain, mailboxes, defquota, maxquota, quota, active) VALUES ('example.org', 60000, 10, 10240, 10240000, 1);")

    # -- scenarios ----------------------------------------------------------

    def dead_first(self, binary, tag):
        db = f"load_dead_{tag}"
        self.fresh_db(db)
        dead = DeadHost()
        cfg = self.config(f"dead-{tag}", db, [f"127.0.0.1:{dead.port}", f"127.0.0.1:{self.a.ldap_port}"],
                          f"connect_timeout_ms = 1000\ntimeout_ms = 1000\nhost_retry_seconds = {int(self.a.retry)}")
        # One first login creates the mailbox (and marks the dead host).
        code, err, _ = self.login(binary, cfg, self.a.user, self.a.user_pw)
        if code != 0:
            raise SystemExit(f"the first login failed ({code}): {err}")
        t0 = time.monotonic()
        res = self.open_loop(binary, cfg, self.a.rate, self.a.seconds, lambda i: (self.a.user, self.a.user_pw))
        codes = [r[1] for r in res]
        ms = sorted(r[3] for r in res)
        during = [t - t0 for t in dead.accepted if t >= t0]
        windows = max(1, int(self.a.seconds // self.a.retry))
        per_window = [sum(1 for t in during if w * self.a.retry <= t < (w + 1) * self.a.retry) for w in range(windows + 1)]
        return {
            "logins": len(res),
            "111": sum(1 for c in codes if c == 111),
            "other non-0": sum(1 for c in codes if c not in (0, 111)),
            "too many connections": sum(1 for r in res if "max_connections" in r[2] or "Too many connections" in r[2]),
            "dead host touched, worst window": max(per_window),
            "dead host touched, total": len(during),
            "p50 ms": round(statistics.median(ms)),
            "p99 ms": round(ms[int(len(ms) * 0.99) - 1]),
        }

    def outage(self, binary, tag):
        db = f"load_outage_{tag}"
        self.fresh_db(db)
        a, b = DeadHost(), DeadHost()
        cfg = self.config(f"outage-{tag}", db, [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"],
                          "connect_timeout_ms = 1000\ntimeout_ms = 1000")
        self.sql("", "FLUSH STATUS")
        before = int(self.sql("", "SHOW GLOBAL STATUS LIKE 'Max_used_connections'").split()[1])
        res = self.open_loop(binary, cfg, self.a.outage_rate, self.a.outage_seconds,
                             lambda i: (self.a.user, self.a.user_pw))
        peak = int(self.sql("", "SHOW GLOBAL STATUS LIKE 'Max_used_connections'").split()[1])
        return {
            "logins": len(res),
            "111": sum(1 for r in res if r[1] == 111),
            "not 111": sum(1 for r in res if r[1] != 111),
            "database connections in use, peak": peak,
            "(peak before the run)": before,
        }

    def sync(self, binary, cfg):
        return subprocess.run([binary, "-c", cfg, "sync", "--force"], capture_output=True, text=True)

    def two_syncs(self, binary, tag):
        db = f"load_sync_{tag}"
        self.fresh_db(db)
        rest = ("[sync]\nimport_users = true\nperiodic_full_sync = true\ndeactivate_missing = true\n"
                "missing_grace_hours = 0\nmax_deactivate_percent = 100\npage_size = 100\n")
        full = self.config(f"sync-full-{tag}", db, [f"127.0.0.1:{self.a.ldap_port}"], "", rest)
        part = self.config(f"sync-part-{tag}", db, [f"127.0.0.1:{self.a.ldap_port}"], "", rest)
        # The replica that lacks users: the same entries under another base.
        for path, base in ((full, f"ou=full,{self.a.base}"), (part, f"ou=partial,{self.a.base}")):
            text = open(path).read().replace(f'base_dn = "{self.a.base}"', f'base_dn = "{base}"')
            open(path, "w").write(text)
        r = self.sync(binary, full)
        if r.returncode != 0:
            raise SystemExit(f"the first sync failed: {r.stdout}{r.stderr}")
        lacking = (f"username REGEXP '^f[0-9]+@' AND CAST(SUBSTRING(username, 2) AS UNSIGNED) >= {self.a.sync_n - self.a.sync_lacking}")
        bad_rounds, skipped = 0, 0
        for _ in range(self.a.sync_rounds):
            out = {}
            ts = [threading.Thread(target=lambda k=k, c=c: out.__setitem__(k, self.sync(binary, c)))
                  for k, c in (("a", full), ("b", part))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            skipped += sum("already running on another host" in o.stdout for o in out.values())
            inactive = int(self.sql(db, f"SELECT COUNT(*) FROM mailbox WHERE {lacking} AND active = 0"))
            marked = int(self.sql(db, f"SELECT COUNT(*) FROM mailbox WHERE {lacking} AND JSON_VALUE(attributes, '$.ldap_missing_since') IS NOT NULL"))
            if inactive not in (0, self.a.sync_lacking) or marked not in (0, self.a.sync_lacking):
                bad_rounds += 1
        # The partial host alone deactivates; then a final run from the full view.
        self.sync(binary, part)
        self.sync(binary, part)
        self.sync(binary, full)
        left = int(self.sql(db, "SELECT COUNT(*) FROM mailbox WHERE active = 0"))
        return {
            "rounds": self.a.sync_rounds,
            "rounds no serial order explains": bad_rounds,
            "runs that found the other host's lock": skipped,
            "present users inactive after a full run": left,
        }

    def import_logins(self, binary, tag):
        db = f"load_import_{tag}"
        self.fresh_db(db)
        rest = f"[sync]\nimport_users = true\nperiodic_full_sync = true\npage_size = {self.a.import_n}\n"
        cfg = self.config(f"import-{tag}", db, [f"127.0.0.1:{self.a.ldap_port}"], "", rest)
        text = open(cfg).read().replace(f'base_dn = "{self.a.base}"', f'base_dn = "ou=import,{self.a.base}"')
        open(cfg, "w").write(text)
        done = threading.Event()
        result = {}

        def syncer():
            result["sync"] = self.sync(binary, cfg)
            done.set()

        t = threading.Thread(target=syncer)
        t.start()
        logins, threads, i = [], [], 0
        start = time.monotonic()
        while not done.is_set() and i < self.a.import_n:
            at = start + i * 0.1
            time.sleep(max(0.0, at - time.monotonic()))
            u = self.a.import_n - 1 - i

            def one(u=u):
                code, err, _ = self.login(binary, cfg, f"i{u}@example.org", f"pw-i{u}")
                ms = next((int(w[3:]) for w in err.split() if w.startswith("ms=")), -1)
                logins.append((code, ms))

            th = threading.Thread(target=one)
            th.start()
            threads.append(th)
            i += 1
        t.join()
        for th in threads:
            th.join()
        decided = [ms for _, ms in logins]
        return {
            "first logins during the import": len(logins),
            "not accepted": sum(1 for c, _ in logins if c != 0),
            "slowest decision ms": max(decided) if decided else -1,
            "waited 1 s or more": sum(1 for ms in decided if ms >= 1000),
        }


def main():
    p = argparse.ArgumentParser()
    for k in ("bin", "base_bin", "work", "socket", "base", "reader_dn", "reader_pw", "db_user", "db_pw",
              "user", "user_pw", "schema", "template", "scenarios"):
        p.add_argument("--" + k.replace("_", "-"), required=True)
    for k in ("ldap_port", "db_port", "sync_n", "sync_lacking", "sync_rounds", "import_n"):
        p.add_argument("--" + k.replace("_", "-"), type=int, required=True)
    for k in ("rate", "seconds", "retry", "outage_rate", "outage_seconds"):
        p.add_argument("--" + k.replace("_", "-"), type=float, required=True)
    a = p.parse_args()
    b = Bench(a)
    scenarios = {
        "dead-first": ("first host dead", b.dead_first),
        "outage": ("every host silent", b.outage),
        "two-syncs": ("two hosts' syncs at once", b.two_syncs),
        "import": ("first logins during an import", b.import_logins),
    }
    report = {}
    for key in a.scenarios.split(","):
        title, fn = scenarios[key]
        for tag, binary in (("new", a.bin), ("base", a.base_bin)):
            print(f"load.sh: {title}: {tag} build ...", file=sys.stderr, flush=True)
            report.setdefault(key, {})[tag] = fn(binary, tag)
    for key in a.scenarios.split(","):
        title, _ = scenarios[key]
        new, base = report[key]["new"], report[key]["base"]
        print(f"\n{title}")
        print(f"| {'measure':45} | {'this build':>10} | {'baseline':>10} |")
        print(f"| {'-' * 45} | {'-' * 10}: | {'-' * 10}: |")
        for k in new:
            print(f"| {k:45} | {new[k]:>10} | {base[k]:>10} |")
    print("\n" + json.dumps(report), file=sys.stderr)


if __name__ == "__main__":
    main()
