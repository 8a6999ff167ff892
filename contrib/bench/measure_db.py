#!/usr/bin/env python3
"""Timing and report for contrib/bench/provision.sh and contrib/bench/sync.sh,
which start the servers, write the configs into --work and run this; see
PROVISION.md and SYNC.md.

Built on measure.py (imported, not changed): the same Runner spawns and times
every process (wall clock with time.perf_counter_ns around subprocess.run, CPU
from RUSAGE_CHILDREN), the same fd-3 credentials pipe for checkpassword, the
same interleaving (one run of every series per round, the order rotated every
round) and per-round ratios, the same report tables.

  measure_db.py login ...   existing-mailbox login, first-login provisioning,
                            auth-only login and ldapwhoami, interleaved
  measure_db.py sync ...    first import, no-op re-sync vs a paged ldapsearch
                            (interleaved), peak RSS over the big directory

Exit status: 0 when every run did what it should (targets met or not), 1 when
a run failed or the database does not hold what it should afterwards.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ left in contrib/bench
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402  (contrib/bench/measure.py)
from measure import Broken, print_process_table, print_table, stats, verdict  # noqa: E402

WARMUP_RUNS = 5
RSS_RUNS = 3
EXISTING_RATIO_TARGET = 0.6
FIRST_RATIO_TARGET = 2.0
IMPORT_TARGET_S = 60.0
NOOP_RATIO_TARGET = 3.0
RSS_TARGET_KIB = 64 * 1024


# ---------------------------------------------------------------------------
# Helpers shared by both benchmarks.

class Sql:
    """Root SQL over the private server's socket (the mariadb client)."""

    def __init__(self, socket, db):
        self.socket, self.db = socket, db

    def value(self, sql, db=None):
        out = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "--batch",
             "--skip-column-names", db or self.db, "-e", sql],
            capture_output=True, text=True)
        if out.returncode != 0:
            raise Broken(f"SQL {sql!r} failed: {out.stderr.strip()}")
        return out.stdout.strip()


def proc_cpu_s(pid):
    """User + system CPU seconds a running process has used so far (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # After the ")" of comm: field 3 (state) is index 0, so utime (14) is 11, stime (15) is 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def rotated(keys, i):
    k = i % len(keys)
    return keys[k:] + keys[:k]


# ---------------------------------------------------------------------------
# provision.sh: logins with a database.

# key, label; the order is also the order of the first round.
LOGIN_SERIES = [
    ("existing", "login, existing mailbox"),
    ("first", "first login (provisions)"),
    ("ldapwhoami", "ldapwhoami bind"),
    ("socket", "login, existing, DB socket"),
    ("authonly", "login, no [database]"),
    ("reply", "floor: checkpassword-reply"),
]


def login_args(argv):
    p = argparse.ArgumentParser(prog="measure_db.py login")
    p.add_argument("--bin", required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--work", required=True, help="folder with db.toml and nodb.toml")
    p.add_argument("--ldap-url", required=True)
    p.add_argument("--login", required=True, help="the user whose mailbox exists")
    p.add_argument("--password", required=True)
    p.add_argument("--user-dn", required=True, help="its DN, for ldapwhoami")
    p.add_argument("--fresh", required=True,
                   help="pattern of the fresh users: LOGIN{i}:PASSWORD{i}, e.g. u{i}@example.org:pw-{i}")
    p.add_argument("--fresh-count", type=int, required=True)
    p.add_argument("--mysql-socket", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--prefill", type=int, default=0,
                   help="mailboxes in the domain before the run (not ours to count)")
    p.add_argument("--slapd-pid", type=int, required=True)
    p.add_argument("--mariadbd-pid", type=int, required=True)
    a = p.parse_args(argv)
    # What measure.Runner reads.
    a.timeout_ms = 0
    a.refused_host = a.silent_host = ""
    return a


class FreshUsers:
    """One not-yet-provisioned user per first login."""

    def __init__(self, pattern, count):
        self.login, self.password = pattern.split(":", 1)
        self.count, self.next = count, 0

    def take(self):
        if self.next >= self.count:
            raise Broken(f"out of fresh users ({self.count}): raise the directory size")
        i = self.next
        self.next += 1
        return (self.login.format(i=i).encode() + b"\0"
                + self.password.format(i=i).encode() + b"\0\0")


def measure_login(a):
    r = measure.Runner(a)
    sql = Sql(a.mysql_socket, a.db)
    fresh = FreshUsers(a.fresh, a.fresh_count)
    existing_creds = r.creds

    def login(variant, creds, wrapper=()):
        r.creds = creds
        return r.checkpassword(variant, wrapper)

    fns = {
        "existing": lambda: login("db", existing_creds),
        "first": lambda: login("db", fresh.take()),
        "ldapwhoami": r.ldapwhoami,
        "socket": lambda: login("dbsock", existing_creds),
        "authonly": lambda: login("nodb", existing_creds),
        "reply": r.reply_floor,
    }

    # The existing user's mailbox: provisioned once, by its own first login.
    if sql.value(f"SELECT COUNT(*) FROM mailbox WHERE username = '{a.login}'") != "0":
        raise Broken(f"{a.login} has a mailbox before its first login")
    provision_once = fns["existing"]()
    if sql.value(f"SELECT COUNT(*) FROM mailbox WHERE username = '{a.login}'") != "1":
        raise Broken(f"the first login of {a.login} did not create its mailbox")
    hash_before = sql.value(f"SELECT attributes FROM mailbox WHERE username = '{a.login}'")

    # Warm-up (not counted): page cache, slapd's and InnoDB's caches, the loader.
    for _ in range(WARMUP_RUNS):
        for k, _ in LOGIN_SERIES:
            fns[k]()

    keys = [k for k, _ in LOGIN_SERIES]
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    load0 = loadavg()
    srv0 = (proc_cpu_s(a.slapd_pid), proc_cpu_s(a.mariadbd_pid))
    started = time.monotonic()
    for i in range(a.rounds):
        for k in rotated(keys, i):
            wall[k].append(fns[k]())
            cpu[k].append(r.last_cpu_ms)
        if (i + 1) % 50 == 0 and i + 1 < a.rounds:
            print(f"measure_db.py: {i + 1}/{a.rounds} rounds", file=sys.stderr)
    loop_s = time.monotonic() - started
    srv1 = (proc_cpu_s(a.slapd_pid), proc_cpu_s(a.mariadbd_pid))
    load1 = loadavg()

    rss_existing = r.peak_rss_kib(RSS_RUNS, lambda w: login("db", existing_creds, w))
    rss_first = r.peak_rss_kib(RSS_RUNS, lambda w: login("db", fresh.take(), w))

    # The database must hold exactly what the logins should have written.
    expected = 1 + fresh.next
    got = {t: sql.value(f"SELECT COUNT(*) FROM {t}")
           for t in ("mailbox", "alias", "quota2", "quota2replica", "user_acl")}
    for t, n in got.items():
        if n != str(expected + (a.prefill if t == "mailbox" else 0)):
            raise Broken(f"{t} holds {n} rows after {expected} provisioned logins: {got}")
    if sql.value("SELECT COUNT(*) FROM mailbox WHERE authsource <> 'ldap' OR active <> 1") != "0":
        raise Broken("a provisioned mailbox is not an active ldap mailbox")
    if sql.value(f"SELECT attributes FROM mailbox WHERE username = '{a.login}'") != hash_before:
        raise Broken(f"the logins of {a.login} rewrote its mailbox (they should write nothing)")

    st = {k: stats(v) for k, v in wall.items()}
    med = lambda k: st[k]["median"]  # noqa: E731
    per_round = lambda f, x, y: statistics.median(map(f, wall[x], wall[y]))  # noqa: E731
    ratio = lambda x: per_round(lambda p, q: p / q, x, "ldapwhoami")  # noqa: E731
    rise = lambda x, y: per_round(lambda p, q: p - q, x, y)  # noqa: E731
    r_existing, r_first = ratio("existing"), ratio("first")

    rows = [
        ["login of an existing mailbox, median", f"{med('existing'):.2f} ms", "-", "info"],
        ["first login (provisioning), median", f"{med('first'):.2f} ms", "-", "info"],
        ["ldapwhoami bind, median", f"{med('ldapwhoami'):.2f} ms", "-", "info"],
        ["ratio existing login / ldapwhoami",
         f"{r_existing:.2f}x (of medians {med('existing') / med('ldapwhoami'):.2f}x)",
         f"<= {EXISTING_RATIO_TARGET}x", verdict(r_existing <= EXISTING_RATIO_TARGET)],
        ["ratio first login / ldapwhoami",
         f"{r_first:.2f}x (of medians {med('first') / med('ldapwhoami'):.2f}x)",
         f"<= {FIRST_RATIO_TARGET}x", verdict(r_first <= FIRST_RATIO_TARGET)],
        ["existing login, database over the unix socket",
         f"{med('socket'):.2f} ms (ratio {ratio('socket'):.2f}x)", "-", "info"],
        ["database share of an existing login",
         f"{rise('existing', 'authonly'):+.2f} ms (vs login without [database], "
         f"{med('authonly'):.2f} ms)", "-", "info"],
        ["provisioning share of a first login",
         f"{rise('first', 'existing'):+.2f} ms (vs existing login)", "-", "info"],
        ["the provisioning login of the existing user", f"{provision_once:.2f} ms", "-", "info"],
        [f"peak RSS, existing login (max of {RSS_RUNS})", f"{rss_existing} KiB", "-", "info"],
        [f"peak RSS, first login (max of {RSS_RUNS})", f"{rss_first} KiB", "-", "info"],
    ]
    n_runs = a.rounds * len(keys)
    print()
    print(f"mailcow-ldap-auth provisioning benchmark: {a.rounds} interleaved rounds in "
          f"{loop_s:.1f} s, {os.cpu_count()} CPUs, load average {load0} before, {load1} after; "
          f"binary {a.bin}")
    print()
    print_table(["metric", "measured", "target", "result"], rows)
    print()
    print_process_table(LOGIN_SERIES, st, cpu)
    print()
    print("ratios and shares: medians of the per-round ratio / difference")
    print(f"server CPU during the rounds ({n_runs} runs): slapd {srv1[0] - srv0[0]:.2f} s, "
          f"mariadbd {srv1[1] - srv0[1]:.2f} s")
    print(f"database afterwards: {expected} mailboxes (1 existing + {fresh.next} first logins), "
          f"each with its alias, quota2, quota2replica and user_acl row"
          + (f", plus {a.prefill} prefilled mailboxes in the domain" if a.prefill else ""))


# ---------------------------------------------------------------------------
# sync.sh: import, no-op re-sync, peak RSS.

SUMMARY = re.compile(
    r"done: (?:DRY RUN, nothing written: )?(\d+) directory entries; created (\d+), "
    r"updated (\d+), reactivated \d+, marked missing \d+, deactivated \d+, skipped (\d+), "
    r"failed (\d+)(?:, [^;]*)?; ([0-9.]+) s")


def sync_args(argv):
    p = argparse.ArgumentParser(prog="measure_db.py sync")
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--rounds", type=int, required=True, help="no-op re-sync vs ldapsearch rounds")
    p.add_argument("--small-conf", required=True)
    p.add_argument("--small-n", type=int, required=True)
    p.add_argument("--small-db", required=True)
    p.add_argument("--big-conf", required=True)
    p.add_argument("--big-n", type=int, required=True)
    p.add_argument("--big-db", required=True)
    p.add_argument("--big-import", choices=("yes", "no"), required=True)
    p.add_argument("--big-timeout", type=int, required=True, help="seconds")
    p.add_argument("--mysql-socket", required=True)
    p.add_argument("--slapd-pid", type=int, required=True)
    p.add_argument("--mariadbd-pid", type=int, required=True)
    if "--" not in argv:
        p.error("the baseline command (ldapsearch ...) must follow --")
    cut = argv.index("--")
    a = p.parse_args(argv[:cut])
    a.ldapsearch = argv[cut + 1:]
    return a


class SyncRunner:
    """Runs a sync (or the baseline) under GNU time in its own process group,
    so a run over the time limit can be stopped with everything it started."""

    def __init__(self, a):
        self.a = a
        self.time_out = os.path.join(a.work, "time.out")
        self.env = {k: v for k, v in os.environ.items() if k != "MAILCOW_LDAP_AUTH_CONFIG"}

    def run(self, name, argv, stdout_path, timeout=None):
        """Returns dict: wall_s, cpu_s (the process), rss_kib, slapd_s, mariadbd_s
        (server CPU during the run), timed_out. Raises Broken on a non-zero exit."""
        wrapped = ["/usr/bin/time", "-f", "%M", "-o", self.time_out, *argv]
        srv0 = (proc_cpu_s(self.a.slapd_pid), proc_cpu_s(self.a.mariadbd_pid))
        ru0 = os.times()
        t0 = time.perf_counter()
        err_path = os.path.join(self.a.work, f"{name}.err")
        with open(stdout_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 env=self.env, start_new_session=True)
            try:
                rc = p.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGTERM)  # the group of the process we started
                rc = p.wait()
                timed_out = True
        wall = time.perf_counter() - t0
        ru1 = os.times()
        srv1 = (proc_cpu_s(self.a.slapd_pid), proc_cpu_s(self.a.mariadbd_pid))
        res = {
            "wall_s": wall,
            "cpu_s": (ru1.children_user - ru0.children_user)
            + (ru1.children_system - ru0.children_system),
            "slapd_s": srv1[0] - srv0[0],
            "mariadbd_s": srv1[1] - srv0[1],
            "timed_out": timed_out,
            "rss_kib": None,
        }
        if timed_out:
            return res
        if rc != 0:
            with open(err_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace").strip()
            raise Broken(f"{name} exited with status {rc}: {tail or '(no stderr)'}")
        with open(self.time_out) as f:
            res["rss_kib"] = int(f.read().split()[-1])
        return res

    def sync(self, name, conf, extra=(), timeout=None):
        path = os.path.join(self.a.work, f"{name}.out")
        res = self.run(name, [self.a.bin, "-c", conf, "sync", "--force", *extra], path, timeout)
        if res["timed_out"]:
            return res
        with open(path, errors="replace") as f:
            m = [SUMMARY.search(line) for line in f]
        m = [x for x in m if x]
        if not m:
            raise Broken(f"{name}: no summary line in {path}")
        entries, created, updated, skipped, failed, own_s = m[-1].groups()
        res.update(entries=int(entries), created=int(created), updated=int(updated),
                   skipped=int(skipped), failed=int(failed), own_s=float(own_s))
        return res

    def ldapsearch(self, name, count=False):
        """The baseline, its output to /dev/null; with count, to a file
        instead, whose entries are counted (the dump must hold every entry
        the sync reads)."""
        path = os.path.join(self.a.work, f"{name}.ldif") if count else os.devnull
        res = self.run(name, self.a.ldapsearch, path)
        if count:
            with open(path, errors="replace") as f:
                res["entries"] = sum(1 for line in f if line.startswith("dn: "))
            os.unlink(path)
        return res


def expect(res, what, **want):
    bad = {k: (res.get(k), v) for k, v in want.items() if res.get(k) != v}
    if bad:
        raise Broken(f"{what}: expected {want}, got " +
                     ", ".join(f"{k}={got}" for k, (got, _) in bad.items()))


def fmt_run(res):
    if res.get("timed_out"):
        return "did not finish"
    return (f"wall {res['wall_s']:.2f} s; CPU: helper {res['cpu_s']:.2f} s, "
            f"slapd {res['slapd_s']:.2f} s, mariadbd {res['mariadbd_s']:.2f} s; "
            f"peak RSS {res['rss_kib']} KiB")


def measure_sync(a):
    s = SyncRunner(a)
    small = Sql(a.mysql_socket, a.small_db)
    big = Sql(a.mysql_socket, a.big_db)
    notes = []
    load0 = loadavg()

    # 1. First import of the small directory into the empty database.
    print(f"measure_db.py: first import of {a.small_n} (load {loadavg()})", file=sys.stderr)
    imp = s.sync("import-small", a.small_conf)
    expect(imp, "first import", entries=a.small_n, created=a.small_n, failed=0)
    n = small.value("SELECT COUNT(*) FROM mailbox WHERE authsource = 'ldap'")
    if n != str(a.small_n):
        raise Broken(f"after the first import the database holds {n} ldap mailboxes, "
                     f"not {a.small_n}")
    snapshot = small.value("SELECT MD5(GROUP_CONCAT(username, name, quota, attributes, active, "
                           "IFNULL(modified, '') ORDER BY username SEPARATOR '|')) FROM mailbox")

    # 2. No-op re-sync vs the paged ldapsearch, interleaved; one warm-up each.
    print(f"measure_db.py: {a.rounds} rounds of no-op re-sync vs ldapsearch "
          f"(load {loadavg()})", file=sys.stderr)
    s.sync("noop-warmup", a.small_conf)
    expect(s.ldapsearch("ldapsearch-warmup", count=True), "ldapsearch baseline",
           entries=a.small_n)
    runs = {"noop": [], "ldapsearch": []}
    for i in range(a.rounds):
        for k in rotated(list(runs), i):
            res = s.sync(f"noop-{i}", a.small_conf) if k == "noop" else s.ldapsearch(f"ldapsearch-{i}")
            if k == "noop":
                expect(res, "no-op re-sync", entries=a.small_n, created=0, updated=0, failed=0)
            runs[k].append(res)
    after = small.value("SELECT MD5(GROUP_CONCAT(username, name, quota, attributes, active, "
                        "IFNULL(modified, '') ORDER BY username SEPARATOR '|')) FROM mailbox")
    if after != snapshot:
        raise Broken("a no-op re-sync changed the mailbox table")
    wall = {k: [x["wall_s"] for x in v] for k, v in runs.items()}
    noop_ratio = statistics.median(map(lambda x, y: x / y, wall["noop"], wall["ldapsearch"]))
    med = {k: statistics.median(v) for k, v in wall.items()}
    medcpu = {k: {c: statistics.median(x[c] for x in v) for c in ("cpu_s", "slapd_s", "mariadbd_s")}
              for k, v in runs.items()}

    # 3. Peak RSS over the big directory: a dry run on its empty database,
    #    then (unless told not to) a real first import and a no-op re-sync.
    print(f"measure_db.py: dry run over {a.big_n} (load {loadavg()})", file=sys.stderr)
    dry = s.sync("dryrun-big", a.big_conf, ["--dry-run"])
    expect(dry, "dry run", entries=a.big_n, created=a.big_n, failed=0)
    if big.value("SELECT COUNT(*) FROM mailbox") != "0":
        raise Broken("the dry run wrote mailboxes")
    big_imp = big_noop = None
    if a.big_import == "yes":
        print(f"measure_db.py: first import of {a.big_n}, time limit {a.big_timeout} s "
              f"(load {loadavg()})", file=sys.stderr)
        big_imp = s.sync("import-big", a.big_conf, timeout=a.big_timeout)
        if big_imp["timed_out"]:
            done = big.value("SELECT COUNT(*) FROM mailbox")
            notes.append(f"the first import of {a.big_n} was stopped at the time limit of "
                         f"{a.big_timeout} s, after creating {done} mailboxes")
        else:
            expect(big_imp, "big import", entries=a.big_n, created=a.big_n, failed=0)
            print(f"measure_db.py: no-op re-sync of {a.big_n} (load {loadavg()})", file=sys.stderr)
            big_noop = s.sync("noop-big", a.big_conf)
            expect(big_noop, "big no-op re-sync", entries=a.big_n, created=0, updated=0, failed=0)
    load1 = loadavg()

    rss_runs = [("dry run", dry)] + [(k, v) for k, v in (("import", big_imp), ("no-op re-sync", big_noop))
                                      if v and not v["timed_out"]]
    rss_max_name, rss_max = max(((k, v["rss_kib"]) for k, v in rss_runs), key=lambda x: x[1])
    rows = [
        [f"first import of {a.small_n}, wall", f"{imp['wall_s']:.1f} s",
         f"<= {IMPORT_TARGET_S:.0f} s", verdict(imp["wall_s"] <= IMPORT_TARGET_S)],
        [f"no-op re-sync of {a.small_n}, median", f"{med['noop']:.2f} s", "-", "info"],
        ["ldapsearch paged dump, median", f"{med['ldapsearch']:.2f} s", "-", "info"],
        ["ratio no-op re-sync / ldapsearch",
         f"{noop_ratio:.2f}x (of medians {med['noop'] / med['ldapsearch']:.2f}x)",
         f"<= {NOOP_RATIO_TARGET:.0f}x", verdict(noop_ratio <= NOOP_RATIO_TARGET)],
        [f"peak RSS over {a.big_n} entries ({rss_max_name})",
         f"{rss_max} KiB ({rss_max / 1024:.1f} MiB)", "<= 64 MiB",
         verdict(rss_max <= RSS_TARGET_KIB)],
    ]
    print()
    print(f"mailcow-ldap-auth sync benchmark: {os.cpu_count()} CPUs, load average {load0} before, "
          f"{load1} after; binary {a.bin}")
    print()
    print_table(["metric", "measured", "target", "result"], rows)
    print()
    detail = [
        [f"first import of {a.small_n}", fmt_run(imp)],
        [f"no-op re-sync of {a.small_n} (median of {a.rounds})",
         f"wall {med['noop']:.2f} s; CPU: helper {medcpu['noop']['cpu_s']:.2f} s, "
         f"slapd {medcpu['noop']['slapd_s']:.2f} s, mariadbd {medcpu['noop']['mariadbd_s']:.2f} s; "
         f"peak RSS {max(x['rss_kib'] for x in runs['noop'])} KiB"],
        [f"ldapsearch paged dump (median of {a.rounds})",
         f"wall {med['ldapsearch']:.2f} s; CPU: ldapsearch {medcpu['ldapsearch']['cpu_s']:.2f} s, "
         f"slapd {medcpu['ldapsearch']['slapd_s']:.2f} s; "
         f"peak RSS {max(x['rss_kib'] for x in runs['ldapsearch'])} KiB"],
        [f"dry run over {a.big_n}", fmt_run(dry)],
    ]
    if big_imp:
        detail.append([f"first import of {a.big_n}", fmt_run(big_imp)])
    if big_noop:
        detail.append([f"no-op re-sync of {a.big_n}", fmt_run(big_noop)])
    print_table(["run", "figures"], detail)
    print()
    print("no-op rounds, wall s: re-sync " + " ".join(f"{x:.2f}" for x in wall["noop"])
          + "; ldapsearch " + " ".join(f"{x:.2f}" for x in wall["ldapsearch"]))
    print("ratio: median of the per-round ratio; CPU: user + system of the process "
          "(getrusage) and of the servers (/proc/PID/stat) during the run")
    for n in notes:
        print(f"note: {n}")


def main():
    measure.reserve_fd3()
    if len(sys.argv) < 2 or sys.argv[1] not in ("login", "sync"):
        print("usage: measure_db.py login|sync ARGS (see provision.sh and sync.sh)",
              file=sys.stderr)
        return 2
    try:
        if sys.argv[1] == "login":
            measure_login(login_args(sys.argv[2:]))
        else:
            measure_sync(sync_args(sys.argv[2:]))
    except Broken as e:
        print(f"measure_db.py: BROKEN: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("measure_db.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
