#!/usr/bin/env python3
"""Profile of one-shot checkpassword logins for contrib/bench/profile.sh
(issue 15), which starts the servers, writes the configs into --work and runs
this; see README.md, "Profile of a one-shot login (issue 15)".

  profile.py steps ...         interleaved rounds of the step series (below):
                               medians, per-round differences, user / system CPU
  profile.py loop KIND N ...   spawn KIND N times, untimed (run under perf record,
                               perf stat)
  profile.py strace KIND N OUT ...   each of N runs under `strace -c -f`; the
                               syscall tables summed into OUT (text)
  profile.py fold PERF_SCRIPT DRIVER_PID   the samples of `perf script` (call
                               graphs) of one loop, sorted into phases

Every run is spawned as measure.py spawns it (measure.Runner: fd 3 pipe, fd 4,
Dovecot's environment, /dev/null on fd 0 and 1). Exit status: 0 when every run
exited as it should, 1 otherwise.
"""

import argparse
import collections
import os
import re
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ left in contrib/bench
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402  (contrib/bench/measure.py)
from measure import REPLY, Broken, print_table, stats  # noqa: E402

WARMUP_RUNS = 5

# key, label, what the step adds (for the report). Order = first round's order.
STEPS = [
    ("true", "/bin/true", "spawn and reap of an empty (static) process"),
    ("reply", "checkpassword-reply alone", "Dovecot's reply program (dynamic, libdovecot)"),
    ("version", "helper --version", "the helper's process start"),
    ("cfg", "auth only, no fd 3 (exit 2)", "config read and checked, watchdog, log line"),
    ("badpw", "auth only, wrong password (exit 1)", "LDAP: connect, service bind, search, user bind"),
    ("login-true", "auth only, login, reply /bin/true", "exec of a static reply program"),
    ("login", "auth only, login (checkpassword-reply)", "exec of the real reply program"),
    ("tls-login", "auth only over LDAPS, login", "TLS: roots, handshake"),
    ("db-cfg", "with [database], no fd 3 (exit 2)", "config with a database (handshake warm-up thread)"),
    ("db-badpw", "with [database], wrong password (exit 1)", "database connection and row, LDAP binds"),
    ("db-login", "with [database], login (checkpassword-reply)", "existing mailbox: the whole login"),
    ("whoami-refused", "ldapwhoami, refused port (exit 255)", "ldapwhoami's process start (dynamic: libldap, GnuTLS, SASL)"),
    ("whoami-badpw", "ldapwhoami, wrong password (exit 49)", "connect, one bind"),
    ("whoami", "ldapwhoami", "connect, bind, whoami extended operation, unbind"),
    ("whoami-tls", "ldapwhoami over LDAPS", "TLS (GnuTLS)"),
]


def common_args(p):
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True, help="folder with nodb.toml, tls.toml, db.toml")
    p.add_argument("--ldap-url", required=True)
    p.add_argument("--ldaps-url", required=True)
    p.add_argument("--refused-url", required=True)
    p.add_argument("--cacert", required=True)
    p.add_argument("--login", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--user-dn", required=True)


class Steps:
    def __init__(self, a):
        a.timeout_ms, a.refused_host, a.silent_host = 0, "", ""
        self.a = a
        self.r = measure.Runner(a)
        self.good = self.r.creds
        self.bad = a.login.encode() + b"\0wrong-password\0\0"

    def spawn(self, what, argv, creds, rcs, env=None, fd4=False):
        """One run; creds None = no fd 3 (the helper reads a closed fd). Returns ms;
        the run's user and system CPU are in self.r.last_user_ms / last_sys_ms."""
        if creds is not None:
            self.r.creds = creds
        return self.r.run(what, argv, fd3=creds is not None, fd4=fd4, env=env, rcs=rcs)

    def helper(self, conf, reply=REPLY):
        return [self.a.bin, "-c", os.path.join(self.a.work, conf), "checkpassword", reply]

    def whoami(self, url, pw):
        return [self.r.ldapwhoami_path, "-x", "-H", url, "-D", self.a.user_dn, "-w", pw]

    def run(self, key):
        a, s = self.a, self.spawn
        tls_env = dict(self.r.env, LDAPTLS_CACERT=a.cacert, LDAPTLS_REQCERT="demand")
        if key == "true":
            return s(key, ["/bin/true"], None, (0,))
        if key == "reply":
            env = dict(self.r.env, USER=a.login, HOME="/nonexistent", EXTRA="")
            return s(key, [REPLY], None, (0,), env=env, fd4=True)
        if key == "version":
            return s(key, [a.bin, "--version"], None, (0,))
        if key == "cfg":
            return s(key, self.helper("nodb.toml"), None, (2,))
        if key == "badpw":
            return s(key, self.helper("nodb.toml"), self.bad, (1,))
        if key == "login-true":
            return s(key, self.helper("nodb.toml", "/bin/true"), self.good, (0,))
        if key == "login":
            return s(key, self.helper("nodb.toml"), self.good, (0,))
        if key == "tls-login":
            return s(key, self.helper("tls.toml"), self.good, (0,))
        if key == "db-cfg":
            return s(key, self.helper("db.toml"), None, (2,))
        if key == "db-badpw":
            return s(key, self.helper("db.toml"), self.bad, (1,))
        if key == "db-login":
            return s(key, self.helper("db.toml"), self.good, (0,))
        if key == "whoami-refused":
            return s(key, self.whoami(a.refused_url, a.password), None, (255,))
        if key == "whoami-badpw":
            return s(key, self.whoami(a.ldap_url, "wrong-password"), None, (49,))
        if key == "whoami":
            return s(key, self.whoami(a.ldap_url, a.password), None, (0,))
        if key == "whoami-tls":
            return s(key, self.whoami(a.ldaps_url, a.password), None, (0,), env=tls_env)
        raise SystemExit(f"profile.py: unknown kind {key}")


def steps_main(argv):
    p = argparse.ArgumentParser(prog="profile.py steps")
    common_args(p)
    p.add_argument("--rounds", type=int, required=True)
    a = p.parse_args(argv)
    st = Steps(a)
    keys = [k for k, _, _ in STEPS]
    for _ in range(WARMUP_RUNS):
        for k in keys:
            st.run(k)
    wall = {k: [] for k in keys}
    user = {k: [] for k in keys}
    sys_ = {k: [] for k in keys}
    load0 = measure_load()
    t0 = time.monotonic()
    for i in range(a.rounds):
        j = i % len(keys)
        for k in keys[j:] + keys[:j]:
            wall[k].append(st.run(k))
            user[k].append(st.r.last_user_ms)
            sys_[k].append(st.r.last_sys_ms)
        if (i + 1) % 50 == 0 and i + 1 < a.rounds:
            print(f"profile.py: {i + 1}/{a.rounds} rounds", file=sys.stderr)
    loop_s = time.monotonic() - t0
    load1 = measure_load()

    # The step each series adds to (per-round difference; "-" = absolute).
    base = {"reply": "true", "version": "true", "cfg": "version", "badpw": "cfg",
            "login-true": "badpw", "login": "badpw", "tls-login": "login",
            "db-cfg": "cfg", "db-badpw": "db-cfg", "db-login": "db-badpw",
            "whoami-refused": "true", "whoami-badpw": "whoami-refused",
            "whoami": "whoami-badpw", "whoami-tls": "whoami"}
    mean = statistics.mean
    rows = []
    for k, label, what in STEPS:
        s = stats(wall[k])
        b = base.get(k)
        rise = (f"{statistics.median(map(lambda x, y: x - y, wall[k], wall[b])):+.2f} vs {b}"
                if b else "-")
        rows.append([label, f"{s['p10']:.2f}", f"{s['median']:.2f}", f"{s['p90']:.2f}", rise,
                     f"{mean(user[k]):.2f}", f"{mean(sys_[k]):.2f}", what])
    print()
    print(f"one-shot login profile, step series: {a.rounds} interleaved rounds in {loop_s:.1f} s, "
          f"{os.cpu_count()} CPUs, load average {load0} before, {load1} after; binary {a.bin}")
    print()
    print_table(["series", "p10 ms", "median ms", "p90 ms", "step (median per round)",
                 "user ms", "sys ms", "what the step adds"], rows)
    print()
    r = lambda x, y: statistics.median(map(lambda p, q: p / q, wall[x], wall[y]))  # noqa: E731
    print(f"ratios (median per round): auth only / ldapwhoami {r('login', 'whoami'):.2f}x, "
          f"with [database] / ldapwhoami {r('db-login', 'whoami'):.2f}x, "
          f"checkpassword-reply alone / ldapwhoami {r('reply', 'whoami'):.2f}x, "
          f"ldapwhoami's start / ldapwhoami {r('whoami-refused', 'whoami'):.2f}x")
    print("user / sys ms: mean getrusage CPU of the process (and what it execs) per run")


def measure_load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def loop_main(argv):
    p = argparse.ArgumentParser(prog="profile.py loop")
    p.add_argument("kind")
    p.add_argument("n", type=int)
    common_args(p)
    a = p.parse_args(argv)
    st = Steps(a)
    print(f"profile.py: driver pid {os.getpid()}", file=sys.stderr)
    for _ in range(a.n):
        st.run(a.kind)


SYSCALL_LINE = re.compile(r"^\s*([0-9.]+)\s+([0-9.]+)\s+(\d+)\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def strace_main(argv):
    p = argparse.ArgumentParser(prog="profile.py strace")
    p.add_argument("kind")
    p.add_argument("n", type=int)
    p.add_argument("out")
    common_args(p)
    a = p.parse_args(argv)
    st = Steps(a)
    calls = collections.Counter()
    usecs = collections.Counter()
    errors = collections.Counter()
    tmp = os.path.join(a.work, "strace.out")
    real_spawn = st.spawn

    def traced(what, argv, creds, rcs, env=None, fd4=False):
        return real_spawn(what, ["strace", "-c", "-f", "-o", tmp, *argv], creds, rcs, env, fd4)

    st.spawn = traced
    for _ in range(a.n):
        st.run(a.kind)
        with open(tmp) as f:
            for line in f:
                m = SYSCALL_LINE.match(line)
                if m and m.group(6) != "total":
                    usecs[m.group(6)] += round(float(m.group(2)) * 1e6)
                    calls[m.group(6)] += int(m.group(4))
                    errors[m.group(6)] += int(m.group(5) or 0)
    total_calls = sum(calls.values())
    total_us = sum(usecs.values())
    with open(a.out, "w") as f:
        f.write(f"strace -c -f of {a.n} runs of {a.kind}: per run {total_calls / a.n:.1f} syscalls, "
                f"{total_us / a.n:.0f} us in syscalls (strace's own count)\n\n")
        rows = [[name, f"{calls[name] / a.n:.1f}", f"{errors[name] / a.n:.1f}",
                 f"{usecs[name] / a.n:.0f}", f"{100 * usecs[name] / max(total_us, 1):.1f}"]
                for name, _ in usecs.most_common()]
        widths = [max(len(str(x)) for x in col) for col in zip(*([["syscall", "calls/run", "errors/run",
                                                                  "us/run", "% time"]] + rows))]
        for row in [["syscall", "calls/run", "errors/run", "us/run", "% time"]] + rows:
            f.write("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() + "\n")


# ---------------------------------------------------------------------------
# Sorting perf samples into phases.

# (phase, frame pattern). A sample goes to the phase of the OUTERMOST frame
# of its call chain (nearest to main) that matches; the order below only
# breaks ties within one frame.
PHASES = [
    ("reply exec", re.compile(r"checkpassword::exec_reply|checkpassword::finish")),
    ("handshake regexes (warm-up thread)", re.compile(r"warm_up_handshake|regex_automata|regex_syntax|regex::")),
    ("TLS set-up", re.compile(r"mailcow_ldap_auth::tls::|rustls::|ring::|webpki|rustls_native_certs")),
    ("database", re.compile(r"mysql|OneShot|mailcow::.*Store|login_mailbox|sasl_log|db_slot")),
    ("LDAP", re.compile(r"directory::|ldap3|lber|Directory")),
    ("config", re.compile(r"config::|load_config|toml|serde")),
    ("watchdog / log", re.compile(r"Watchdog|log::init|mailcow_ldap_auth::log::")),
    ("decision (auth::decide)", re.compile(r"auth::decide|passhash")),
    ("Rust runtime start (before main)", re.compile(r"std::rt::lang_start|_start_c|__libc_start_main|__libc_setup_tls|_dl_relocate_static_pie|__libc_init_secure|init_cpu_features")),
]


def fold_main(argv):
    p = argparse.ArgumentParser(prog="profile.py fold")
    p.add_argument("script", help="output of perf script (with call graphs)")
    p.add_argument("driver_pid", type=int)
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--hz", type=float, required=True, help="perf record -F")
    a = p.parse_args(argv)
    by_comm = collections.Counter()
    by_phase = collections.Counter()
    kernel = collections.Counter()
    top_kernel = collections.Counter()
    top_user = collections.Counter()
    total = 0

    def flush(head, frames):
        nonlocal total
        if head is None:
            return
        comm, pid = head
        if pid == a.driver_pid:
            return
        total += 1
        leaf_kernel = bool(frames) and frames[0][1] == "[kernel.kallsyms]"
        if comm.startswith("python"):
            phase = "spawn (fork in the driver, before exec)"
        elif comm.startswith("checkpassword"):
            phase = "reply exec"
        elif comm == "ldapwhoami":
            phase = "ldapwhoami"
        else:
            phase = None
            user = [f for f in frames if f[1] != "[kernel.kallsyms]"]
            for sym, _ in reversed(user):  # outermost first
                for name, pat in PHASES:
                    if pat.search(sym):
                        phase = name
                        break
                if phase:
                    break
            if phase is None:
                if not user:
                    syms = " ".join(s for s, _ in frames)
                    phase = ("process start (execve, loading)" if re.search(r"execve|load_elf|exec_binprm", syms)
                             else "process exit" if re.search(r"do_exit|exit_group|exit_mmap", syms)
                             else "kernel, no user stack")
                else:
                    phase = "other (helper)"
        by_phase[phase] += 1
        by_comm[comm] += 1
        if leaf_kernel:
            kernel[phase] += 1
            top_kernel[frames[0][0]] += 1
        elif frames:
            top_user[(comm, frames[0][0][:90])] += 1

    head, frames = None, []
    with open(a.script, errors="replace") as f:
        for line in f:
            if not line.strip():
                flush(head, frames)
                head, frames = None, []
                continue
            if not line.startswith((" ", "\t")):
                # "comm pid/tid ..." or "comm pid ..."
                parts = line.split()
                pid = parts[1].split("/")[0] if len(parts) > 1 else "0"
                # comm may contain spaces; find the first field that is a pid
                for i, x in enumerate(parts[1:], 1):
                    if re.match(r"^\d+(/\d+)?$", x):
                        pid = x.split("/")[0]
                        comm = " ".join(parts[:i])
                        break
                head, frames = (comm, int(pid)), []
            else:
                m = re.match(r"^\s*[0-9a-f]+\s+(.*?)\s+\(([^)]*)\)\s*$", line)
                if m:
                    sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))
                    frames.append((sym, m.group(2)))
    flush(head, frames)
    ms = lambda n: n / a.hz * 1e3 / a.runs  # noqa: E731
    print(f"{total} samples at {a.hz:.0f} Hz over {a.runs} runs: {ms(total):.2f} ms CPU per run "
          f"(the spawned processes; servers not included)")
    print()
    rows = [[ph, f"{ms(n):.3f}", f"{100 * n / total:.1f}", f"{100 * kernel[ph] / n:.0f}"]
            for ph, n in by_phase.most_common()]
    print_table(["phase", "CPU ms/run", "% of samples", "% in kernel"], rows)
    print()
    print(f"kernel share of all samples: {100 * sum(kernel.values()) / total:.1f}%")
    print()
    print_table(["kernel leaf function", "CPU ms/run"],
                [[s, f"{ms(n):.3f}"] for s, n in top_kernel.most_common(15)])
    print()
    print_table(["process", "user leaf function", "CPU ms/run"],
                [[c, s, f"{ms(n):.3f}"] for (c, s), n in top_user.most_common(15)])


def main():
    measure.reserve_fd3()
    cmds = {"steps": steps_main, "loop": loop_main, "strace": strace_main}
    if len(sys.argv) >= 2 and sys.argv[1] == "fold":
        fold_main(sys.argv[2:])
        return 0
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print("usage: profile.py steps|loop|strace|fold ARGS (see profile.sh)", file=sys.stderr)
        return 2
    try:
        cmds[sys.argv[1]](sys.argv[2:])
    except Broken as e:
        print(f"profile.py: BROKEN: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
