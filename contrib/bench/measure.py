#!/usr/bin/env python3
"""Timing and report for contrib/bench/login.sh, which starts the servers,
writes the configs into --work and runs this; see README.md.

Every run is one process, timed wall-clock from spawn to exit with
time.perf_counter_ns around subprocess.run. The checkpassword helper gets
the credentials on fd 3 (a pipe holding "user\\0password\\0\\0") and /dev/null
on fd 0, as Dovecot gives them, and execs Dovecot's own checkpassword-reply
(BENCH_REPLY overrides it), with fd 4 (where it writes the reply: /dev/null
here) and ORIG_UID set as Dovecot sets them.
The variants are interleaved (one run of each per round, the order rotated
every round) so that machine noise hits all of them alike.

Exit status: 0 when every run succeeded, 1 when a login or bind failed.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024
RATIO_TARGET = 0.5
RSS_TARGET_KIB = 8 * 1024
SIZE_TARGET_BYTES = 8 * MIB
RISE_TARGET_MS = 1.0
WARMUP_RUNS = 5
RSS_RUNS = 5
# The reply program Dovecot execs after a successful check (dovecot-core).
REPLY = os.environ.get("BENCH_REPLY", "/usr/lib/dovecot/checkpassword-reply")


class Broken(Exception):
    """A run that should have succeeded did not: the benchmark is void."""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--timeout-ms", type=int, required=True)
    p.add_argument("--login", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--user-dn", required=True)
    p.add_argument("--ldap-url", required=True)
    p.add_argument("--work", required=True, help="folder with <variant>.toml and state-<variant>/")
    p.add_argument("--refused-host", required=True)
    p.add_argument("--silent-host", required=True)
    return p.parse_args()


def reserve_fd3():
    """Park /dev/null on fd 3 and fd 4 so that no file this script opens gets
    those numbers: fd 3 is where each checkpassword run finds its credentials
    pipe, fd 4 where checkpassword-reply writes its answer (Dovecot reads a
    pipe there; the benchmark discards it)."""
    nul = os.open(os.devnull, os.O_RDONLY)
    if nul != 3:
        os.dup2(nul, 3, inheritable=False)
        os.close(nul)
    out = os.open(os.devnull, os.O_WRONLY)
    if out != 4:
        os.dup2(out, 4, inheritable=False)
        os.close(out)
    if not os.access(REPLY, os.X_OK):
        raise SystemExit(f"measure.py: the reply program {REPLY} is missing: "
                         "apt-get install dovecot-core, or set BENCH_REPLY")


class Runner:
    """Spawns and times the processes."""

    def __init__(self, args):
        self.args = args
        self.creds = args.login.encode() + b"\0" + args.password.encode() + b"\0\0"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("MAILCOW_LDAP_AUTH_CONFIG", "LDAPTLS_CACERT")
        }
        # What Dovecot sets for an IMAP login (the password never goes in the environment).
        self.env.update({"SERVICE": "imap", "TCPREMOTEIP": "127.0.0.1", "PROTO": "TCP"})
        # checkpassword-reply refuses to run (111) without the uid Dovecot ran as.
        self.env["ORIG_UID"] = str(os.getuid())
        self.stderr = tempfile.TemporaryFile()
        # Absolute paths for both programs, so neither pays a PATH search.
        self.ldapwhoami_path = shutil.which("ldapwhoami") or "/usr/bin/ldapwhoami"

    def config(self, variant):
        return os.path.join(self.args.work, variant + ".toml")

    def _fd3_pipe(self):
        """Put a fresh pipe holding the credentials on fd 3 (inheritable)."""
        r, w = os.pipe()
        os.write(w, self.creds)  # a few bytes: fits in the pipe buffer
        os.close(w)
        if r != 3:
            os.dup2(r, 3)  # replaces the previous run's pipe, or the /dev/null placeholder
            os.close(r)

    def reply_floor(self):
        """Dovecot's checkpassword-reply alone, spawned as our helper execs it
        (USER, HOME, fd 4): the part of every login that is not ours."""
        env = dict(self.env, USER=self.args.login, HOME="/nonexistent", EXTRA="")
        return self.run("checkpassword-reply", [REPLY], fd3=False, fd4=True, env=env)

    def run(self, what, argv, fd3, fd4=False, env=None, rcs=(0,)):
        """Run argv to its end; return the wall time in ms. Raise Broken if it
        exits with a status not in rcs. The CPU time of the process goes to
        self.last_user_ms and self.last_sys_ms, their sum to self.last_cpu_ms."""
        if fd3:
            self._fd3_pipe()
        self.stderr.seek(0)
        self.stderr.truncate()
        # Only one child at a time: the change in RUSAGE_CHILDREN is this one's CPU.
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter_ns()
        rc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            pass_fds=(3, 4) if fd3 else ((4,) if fd4 else ()),
            env=env or self.env,
        ).returncode
        elapsed = (time.perf_counter_ns() - t0) / 1e6
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_user_ms = (ru1.ru_utime - ru0.ru_utime) * 1e3
        self.last_sys_ms = (ru1.ru_stime - ru0.ru_stime) * 1e3
        self.last_cpu_ms = self.last_user_ms + self.last_sys_ms
        if rc not in rcs:
            self.stderr.seek(0)
            err = self.stderr.read().decode(errors="replace").strip()
            expected = "" if rcs == (0,) else f" (expected {rcs})"
            raise Broken(f"{what} exited with status {rc}{expected}: {err or '(no output on stderr)'}")
        return elapsed

    def checkpassword(self, variant, wrapper=()):
        argv = [*wrapper, self.args.bin, "-c", self.config(variant), "checkpassword", REPLY]
        return self.run(f"checkpassword ({variant})", argv, fd3=True)

    def ldapwhoami(self, wrapper=()):
        argv = [*wrapper, self.ldapwhoami_path, "-x", "-H", self.args.ldap_url,
                "-D", self.args.user_dn, "-w", self.args.password]
        return self.run("ldapwhoami", argv, fd3=False)

    def peak_rss_kib(self, runs, fn):
        """Largest GNU time %M (KiB) over `runs` runs of fn(wrapper)."""
        out = os.path.join(self.args.work, "time.out")
        peak = 0
        for _ in range(runs):
            fn(("/usr/bin/time", "-f", "%M", "-o", out))
            with open(out) as f:
                peak = max(peak, int(f.read().split()[-1]))
        return peak


def health(work, variant):
    """The host-health.json of a variant's state_dir, or None."""
    try:
        with open(os.path.join(work, f"state-{variant}", "host-health.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def stats(xs):
    s = sorted(xs)
    q = lambda p: s[min(len(s) - 1, int(p * len(s)))]  # noqa: E731
    return {"min": s[0], "p10": q(0.10), "median": statistics.median(s),
            "p90": q(0.90), "max": s[-1], "n": len(s)}


def stripped(path):
    """'yes'/'no' from file(1), or '?' when it is not installed."""
    if not shutil.which("file"):
        return "?"
    out = subprocess.run(["file", "-b", path], capture_output=True, text=True).stdout
    return "no" if "not stripped" in out else ("yes" if "stripped" in out else "?")


def verdict(ok):
    return "PASS" if ok else "FAIL"


# The series measured in the interleaved loop: key, label in the report.
SERIES = [
    ("checkpassword", "checkpassword login"),
    ("ldapwhoami", "ldapwhoami bind"),
    ("refused", "refused 1st host"),
    ("refused-nomem", "refused, no state_dir"),
    ("silent", "silent 1st host (rest)"),
    ("true", "floor: /bin/true"),
    ("reply", "floor: checkpassword-reply"),
    ("version", "floor: helper --version"),
]


def interleaved(r, rounds):
    """One run of every series per round, the order rotated each round.
    Returns {series: [wall ms]}, {series: [cpu ms]} and the loop's duration."""
    fns = {
        "checkpassword": lambda: r.checkpassword("plain"),
        "ldapwhoami": r.ldapwhoami,
        "refused": lambda: r.checkpassword("refused"),
        "refused-nomem": lambda: r.checkpassword("refused-nomem"),
        "silent": lambda: r.checkpassword("silent"),
        "true": lambda: r.run("/bin/true", ["/bin/true"], fd3=False),
        "reply": r.reply_floor,
        "version": lambda: r.run("--version", [r.args.bin, "--version"], fd3=False),
    }
    keys = [k for k, _ in SERIES]
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    started = time.monotonic()
    for i in range(rounds):
        k = i % len(keys)
        for name in keys[k:] + keys[:k]:
            wall[name].append(fns[name]())
            cpu[name].append(r.last_cpu_ms)
        if (i + 1) % 50 == 0 and i + 1 < rounds:
            print(f"measure.py: {i + 1}/{rounds} rounds", file=sys.stderr)
    return wall, cpu, time.monotonic() - started


def print_table(header, rows):
    widths = [max(len(str(row[c])) for row in [header] + rows) for c in range(len(header))]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    print(fmt(header))
    print(fmt(["-" * w for w in widths]))
    for row in rows:
        print(fmt(row))



def print_process_table(series, st, cpu):
    """The per-process table: wall-time percentiles and the CPU median of each series."""
    cols = ("min", "p10", "median", "p90", "max")
    print_table(
        ["per process, wall ms", *cols, "cpu median"],
        [[label, *(f"{st[k][c]:.2f}" for c in cols), f"{statistics.median(cpu[k]):.2f}"]
         for k, label in series],
    )

def measure(args):
    r = Runner(args)
    timeout = args.timeout_ms

    # Warm-up (not counted): page cache, slapd's entry cache, dynamic loader.
    for _ in range(WARMUP_RUNS):
        r.checkpassword("plain")
        r.ldapwhoami()
        r.checkpassword("refused-nomem")

    # First logins with a dead first host: nothing remembered yet.
    first_refused = r.checkpassword("refused")
    first_silent = r.checkpassword("silent")
    memory = {"refused": health(args.work, "refused"), "silent": health(args.work, "silent")}
    for variant, host in (("refused", args.refused_host), ("silent", args.silent_host)):
        if not memory[variant] or host not in memory[variant]:
            print(f"measure.py: WARNING: after the first {variant} login, "
                  f"state-{variant}/host-health.json does not name {host}: {memory[variant]}",
                  file=sys.stderr)

    wall, cpu, loop_s = interleaved(r, args.rounds)

    rss = r.peak_rss_kib(RSS_RUNS, lambda w: r.checkpassword("plain", w))
    rss_whoami = r.peak_rss_kib(RSS_RUNS, lambda w: r.ldapwhoami(w))
    size = os.path.getsize(args.bin)

    st = {name: stats(xs) for name, xs in wall.items()}
    cp, who = st["checkpassword"]["median"], st["ldapwhoami"]["median"]
    # Paired statistics: each round's runs are adjacent in time, so the
    # difference (or ratio) within a round cancels the load that varies
    # between rounds; their median is what the targets are checked against.
    pairs = lambda v, f: statistics.median(map(f, wall[v], wall["checkpassword"]))  # noqa: E731
    rise = lambda v: pairs(v, lambda x, base: x - base)  # noqa: E731
    rise_text = lambda v: (f"{rise(v):+.2f} ms (medians {st[v]['median']:.2f} "  # noqa: E731
                           f"vs {cp:.2f})")
    ratio = statistics.median(map(lambda c, w: c / w, wall["checkpassword"], wall["ldapwhoami"]))
    slow_silent = sum(1 for x in wall["silent"] if x >= timeout / 2)

    rows = [
        ["checkpassword login, median", f"{cp:.2f} ms", "-", "info"],
        ["ldapwhoami bind, median", f"{who:.2f} ms", "-", "info"],
        ["ratio checkpassword / ldapwhoami", f"{ratio:.2f}x (of medians {cp / who:.2f}x)",
         f"<= {RATIO_TARGET}x", verdict(ratio <= RATIO_TARGET)],
        [f"peak RSS of one login (max of {RSS_RUNS})",
         f"{rss} KiB ({rss / 1024:.1f} MiB)", "<= 8 MiB", verdict(rss <= RSS_TARGET_KIB)],
        [f"release binary size (stripped: {stripped(args.bin)})",
         f"{size} B ({size / MIB:.2f} MiB)", "<= 8 MiB", verdict(size <= SIZE_TARGET_BYTES)],
        ["refused 1st host: first login", f"{first_refused:.2f} ms", "-", "info"],
        ["refused 1st host: rise", rise_text("refused"),
         f"<= {RISE_TARGET_MS} ms", verdict(rise("refused") <= RISE_TARGET_MS)],
        ["refused 1st host, no state_dir: rise", rise_text("refused-nomem"),
         f"<= {RISE_TARGET_MS} ms", verdict(rise("refused-nomem") <= RISE_TARGET_MS)],
        ["silent 1st host: first login", f"{first_silent:.2f} ms",
         f"{timeout}..{timeout + 100} ms", verdict(timeout <= first_silent <= timeout + 100)],
        ["silent 1st host: rise, later logins", rise_text("silent"),
         f"<= {RISE_TARGET_MS} ms", verdict(rise("silent") <= RISE_TARGET_MS)],
    ]

    print()
    print(f"mailcow-ldap-auth checkpassword benchmark: {args.rounds} interleaved rounds "
          f"in {loop_s:.1f} s, {os.cpu_count()} CPUs, binary {args.bin}")
    print()
    print_table(["metric", "measured", "target", "result"], rows)
    print()
    print_process_table(SERIES, st, cpu)
    print()
    print("ratio and rises: medians of the per-round ratio / difference to the plain login")
    print(f"peak RSS of one ldapwhoami (for comparison): {rss_whoami} KiB")
    print(f"silent series: {slow_silent} of {len(wall['silent'])} runs took >= {timeout // 2} ms "
          "(a remembered host is retried after host_retry_seconds = 30)")
    print(f"host-health.json after the first logins: refused {json.dumps(memory['refused'])}, "
          f"silent {json.dumps(memory['silent'])}")


def main():
    reserve_fd3()
    args = parse_args()
    try:
        measure(args)
    except Broken as e:
        print(f"measure.py: BROKEN: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("measure.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
