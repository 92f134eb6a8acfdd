#!/usr/bin/python3
"""pgwarden side-by-side benchmark: direct PostgreSQL vs PgBouncer vs pgwarden.

Starts a throwaway PostgreSQL (tests/integration/pgfixture.py), PgBouncer and pgwarden with
equivalent settings (transaction pooling, same pool size, trust auth, same route to the
server), initialises pgbench at a fixed scale and runs every scenario in interleaved rounds
(direct, PgBouncer, pgwarden, direct, ...) so that machine drift cancels out. Then, on separate
shorter runs, counts the poolers' system calls per transaction with perf (strace as fallback).
Writes bench/results/latest.{md,json,png} plus timestamped copies.

It measures; it never asserts. A pooler that cannot start or answer is reported as "not
available" with the reason from its log, and the rest of the run goes on.

  bench/run.py --quick              one round of short runs (under 3 minutes)
  bench/run.py                      the full suite (3 rounds of 20 s runs, ~20 minutes)
  bench/run.py --tls --scenarios select,connect,idle
                                    the same with TLS on every hop (reports latest-tls.*)
  bench/run.py --help               every option
"""
import argparse
import datetime
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from pgfixture import PgServer, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = ["direct", "pgbouncer", "pgwarden"]
LABEL = {"direct": "direct", "pgbouncer": "PgBouncer", "pgwarden": "pgwarden"}

# pgbench scenarios. est_tps only sizes the per-transaction log sampling (p99).
PGBENCH_SCENARIOS = {
    "select": {"args": ["-S", "-c", "50"], "est_tps": 50000,
               "title": "select-only, 50 clients", "cmd": "pgbench -n -S -c 50 -j 2"},
    "extended": {"args": ["-S", "-M", "extended", "-c", "50"], "est_tps": 45000,
                 "title": "select-only, extended protocol",
                 "cmd": "pgbench -n -S -M extended -c 50 -j 2"},
    "tpcb": {"args": ["-c", "50"], "est_tps": 5000,
             "title": "TPC-B (default script, 7 statements)", "cmd": "pgbench -n -c 50 -j 2"},
    "connect": {"args": ["-S", "-C", "-c", "20"], "est_tps": 8000,
                "title": "new connection per transaction", "cmd": "pgbench -n -S -C -c 20 -j 2"},
    "c250": {"args": ["-S", "-c", "250"], "est_tps": 30000,
             "title": "250 clients over a pool of 20", "cmd": "pgbench -n -S -c 250 -j 2"},
}
STREAM_SCENARIOS = {
    "stream-copy": {"title": "large result as COPY TO STDOUT (psql)"},
    "stream-rows": {"title": "large result as DataRows (pgbench -t 1)"},
}
ALL_SCENARIOS = list(PGBENCH_SCENARIOS) + list(STREAM_SCENARIOS) + ["idle"]
ROW_BYTES = 1000  # repeat('x', ROW_BYTES) per row in the large results

SYSCALL_NAMES = ["sendto", "recvfrom", "read", "write", "readv", "writev", "sendmsg",
                 "recvmsg", "epoll_wait", "epoll_pwait", "epoll_ctl", "accept", "accept4",
                 "close", "fcntl", "setsockopt", "io_uring_enter"]

_children = []  # every Popen we start, for cleanup
# libpq settings every client we start gets (--tls: PGSSLMODE=require); see clean_env.
CLIENT_ENV = {}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env.update(CLIENT_ENV)
    return env


def popen(args, **kw):
    p = subprocess.Popen(args, env=kw.pop("env", clean_env()), **kw)
    _children.append(p)
    return p


def stop_process(p, sig=signal.SIGTERM, timeout=10):
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
    except ProcessLookupError:
        pass


def cleanup_children():
    for p in reversed(_children):
        stop_process(p, timeout=5)


# --------------------------------------------------------------------------- /proc accounting
def proc_tree(pid):
    """pid and all its descendants (a pooler may fork workers)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, pp in parents.items() if pp in frontier]
        tree += frontier
    return tree


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total


def status_kb(pids, key):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def reset_peak_rss(pids):
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
    return True


def machine_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
    return busy, sum(v[:8]), v[0] + v[1] + v[2]  # busy, total, task time (no irq/softirq)


def foreign_snapshot():
    """{pid: utime+stime+cutime+cstime} of every user-space process this run did not start
    (other users of the machine). Kernel threads are left out: theirs is mostly our own
    network work."""
    own = set()
    for root in OWN_ROOTS + [os.getpid()]:
        own.update(proc_tree(root))
    snap = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in own:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == 2 or entry == "2":  # kthreadd and its children
                continue
            snap[int(entry)] = sum(int(x) for x in fields[11:15])
        except (OSError, ValueError, IndexError):
            pass
    return snap


def foreign_ticks(before, after):
    return sum(t - before.get(pid, 0) for pid, t in after.items() if t >= before.get(pid, 0))


OWN_ROOTS = []  # postmaster and pooler pids, filled in by main(); our own children count too


class Meter:
    """CPU, RSS and machine CPU around one measured run of one target."""

    def __init__(self, pids):
        self.pids = pids or []

    def __enter__(self):
        self.hwm_reset = reset_peak_rss(self.pids) if self.pids else False
        self.rss_before = status_kb(self.pids, "VmRSS")
        self.ticks0 = cpu_ticks(self.pids)
        self.f0 = foreign_snapshot()
        self.m0 = machine_cpu()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.t0
        self.ticks1 = cpu_ticks(self.pids)
        self.m1 = machine_cpu()
        self.f1 = foreign_snapshot()
        self.peak_rss = status_kb(self.pids, "VmHWM") if self.hwm_reset else None
        self.rss_after = status_kb(self.pids, "VmRSS")
        return False

    def pooler_cpu_s(self):
        return (self.ticks1 - self.ticks0) / CLK_TCK if self.pids else None

    def machine_cpu_s(self):
        return (self.m1[0] - self.m0[0]) / CLK_TCK

    def machine_busy_pct(self):
        total = self.m1[1] - self.m0[1]
        return 100.0 * (self.m1[0] - self.m0[0]) / total if total else None

    def fill(self, rec, per=None):
        """Adds the pooler/machine numbers to a result record; per = transactions."""
        rec["elapsed_s"] = round(self.elapsed, 3)
        rec["machine_busy_pct"] = round(self.machine_busy_pct() or 0, 1)
        total = self.m1[1] - self.m0[1]
        if total > 0:
            foreign = foreign_ticks(self.f0, self.f1)
            # Approximate: a short process reaped during the run brings its whole lifetime in
            # its parent's cutime, hence the clamp.
            rec["foreign_cpu_pct"] = round(min(100.0, max(0.0, 100.0 * foreign / total)), 1)
        if self.pids:
            rec["pooler_cpu_s"] = round(self.pooler_cpu_s(), 3)
            rec["rss_before_kb"] = self.rss_before
            rec["rss_after_kb"] = self.rss_after
            rec["peak_rss_kb"] = self.peak_rss
        if per:
            rec["machine_cpu_us_tx"] = round(self.machine_cpu_s() * 1e6 / per, 2)
            if self.pids:
                rec["pooler_cpu_us_tx"] = round(self.pooler_cpu_s() * 1e6 / per, 2)


# --------------------------------------------------------------------------- PostgreSQL
class BenchPg(PgServer):
    """The test fixture's server with room for 250 direct clients and trust on loopback."""

    def __init__(self, bindir=None, max_connections=300, shared_buffers="256MB", ssl=False):
        super().__init__(bindir, ssl=ssl)
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers

    def _write_conf(self):
        super()._write_conf()
        with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as f:
            f.write(f"max_connections = {self.max_connections}\n"
                    f"shared_buffers = {self.shared_buffers}\n"
                    "max_wal_size = 4GB\ncheckpoint_timeout = 30min\n")
        # Benchmarks use trust everywhere (as the reference profile did): no SCRAM cost in the
        # direct -C case, and the poolers log in to the server without a password.
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 trust\n")


# --------------------------------------------------------------------------- poolers
class Target:
    """direct PostgreSQL or a pooler process we start and watch."""

    def __init__(self, name, port):
        self.name = name
        self.port = port
        self.available = True
        self.reason = ""
        self.version = ""
        self.notes = []

    def pids(self):
        return []

    def alive(self):
        return True

    def ensure(self):
        return self.available

    def stop(self):
        pass


class Direct(Target):
    pass


def pgwarden_send_mode(logfile):
    """How pgwarden sends (its start-up log says whether io_uring batching is on)."""
    try:
        with open(logfile, errors="replace") as f:
            text = f.read()
    except OSError:
        return "unknown"
    if "batched per loop turn with io_uring" in text:
        return "a loop turn's sends batched with io_uring"
    m = re.search(r"io_uring unavailable: ([^:\n]*)", text)
    if m:
        return f"one send() per message (io_uring unavailable: {m.group(1)})"
    return "one send() per message"


class Pooler(Target):
    def __init__(self, name, binary, args, workdir, port, pg, opts):
        super().__init__(name, port)
        self.binary = binary
        self.extra_args = args
        self.dir = os.path.join(workdir, name)
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        self.logfile = os.path.join(self.dir, f"{name}.log")
        self.pg = pg
        self.opts = opts
        self.proc = None
        self.starts = 0
        self.run_as = "postgres" if os.geteuid() == 0 else None

    def write_config(self):
        os.makedirs(self.dir, exist_ok=True)
        if self.opts.server_via == "unix":
            server = f"host={self.pg.socket_dir} port={self.pg.port}"
        else:
            server = f"host=127.0.0.1 port={self.pg.port}"
        with open(os.path.join(self.dir, "userlist.txt"), "w") as f:
            f.write('"postgres" ""\n')
        # One config text for both poolers; only the port differs.
        with open(self.ini, "w") as f:
            f.write(
                "[databases]\n"
                f"postgres = {server} dbname=postgres user=postgres\n\n"
                "[pgbouncer]\n"
                "listen_addr = 127.0.0.1\n"
                f"listen_port = {self.port}\n"
                "unix_socket_dir =\n"
                "auth_type = trust\n"
                f"auth_file = {os.path.join(self.dir, 'userlist.txt')}\n"
                "pool_mode = transaction\n"
                f"default_pool_size = {self.opts.pool_size}\n"
                f"max_client_conn = {max(self.opts.idle_clients + 1000, 2000)}\n"
                "admin_users = postgres\n"
                "log_connections = 0\n"
                "log_disconnections = 0\n")
            if self.opts.tls:
                # TLS on both hops, the same settings for both poolers: clients must use it
                # (pgbench connects with sslmode=require), and the pooler asks PostgreSQL for
                # it without checking the certificate (as sslmode=require).
                f.write("client_tls_sslmode = require\n"
                        f"client_tls_key_file = {self.pg.cert('server.key')}\n"
                        f"client_tls_cert_file = {self.pg.cert('server.crt')}\n"
                        "server_tls_sslmode = require\n")
            if self.name == "pgwarden" and self.opts.pgwarden_manager == "off":
                # pgwarden's own section (PgBouncer would warn about it): the pooler alone.
                f.write("\n[manager]\nlive = off\n")
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            for root, dirs, files in os.walk(self.dir):
                for p in [root] + [os.path.join(root, x) for x in files]:
                    os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o755)

    def start(self):
        self.starts += 1
        self.write_config()
        kw = {}
        if self.run_as:
            kw = {"user": self.run_as, "group": self.run_as}
        logf = open(self.logfile, "ab")
        try:
            self.proc = popen([self.binary] + self.extra_args + [self.ini], stdout=logf,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True, cwd=self.dir, **kw)
        except OSError as e:
            self.available, self.reason = False, f"could not execute {self.binary}: {e}"
            return False
        finally:
            logf.close()
        deadline = time.monotonic() + self.opts.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.available = False
                self.reason = (f"exited with status {self.proc.returncode} at start; log: "
                               f"{self.log_tail()}")
                return False
            ok, last = psql_select1(self.port)
            if ok:
                self.available, self.reason = True, ""
                OWN_ROOTS.append(self.proc.pid)
                return True
            time.sleep(0.25)
        self.available = False
        last = " ".join(last.split())[:200]
        self.reason = (f"did not answer SELECT 1 within {self.opts.start_timeout:.0f} s "
                       f"({last}); log: {self.log_tail()}")
        stop_process(self.proc)
        return False

    def log_tail(self, n=600):
        try:
            with open(self.logfile, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - n))
                text = f.read().decode(errors="replace").strip()
        except OSError:
            return "(no log)"
        return " | ".join(line for line in text.splitlines() if line.strip())[-n:] or "(empty)"

    def pids(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        return proc_tree(self.proc.pid)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ensure(self):
        """Running and answering; restarts once after a crash (noted in the report)."""
        if not self.available:
            return False
        if self.alive():
            return True
        note = f"{LABEL[self.name]} exited with status {self.proc.returncode}; log: " \
               f"{self.log_tail()}"
        self.notes.append(note)
        log(note)
        if self.starts >= 3:
            self.available, self.reason = False, note
            return False
        log(f"restarting {LABEL[self.name]}")
        return self.start()

    def stop(self):
        stop_process(self.proc)

    def restart_fresh(self, new_port):
        """A new process (on a new port, so no lingering socket can get in the way): memory
        freed by earlier runs stays in a process's RSS and would hide what new clients cost."""
        self.stop()
        self.port = new_port
        ok = self.start()
        self.starts -= 1
        return ok


def psql_select1(port, timeout=2):
    try:
        out = subprocess.run(["psql", "-X", "-At", "-c", "SELECT 1",
                              f"host=127.0.0.1 port={port} user=postgres dbname=postgres "
                              f"connect_timeout={timeout}"],
                             capture_output=True, text=True, timeout=timeout + 3, env=clean_env())
    except subprocess.TimeoutExpired:
        return False, "psql timed out"
    return out.returncode == 0 and out.stdout.strip() == "1", out.stderr


def tool_version(args):
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "unknown"


# --------------------------------------------------------------------------- pgbench runs
def parse_pgbench(text):
    r = {}
    m = re.search(r"number of transactions actually processed: (\d+)", text)
    if m:
        r["tx"] = int(m.group(1))
    m = re.search(r"number of failed transactions: (\d+)", text)
    if m:
        r["failed_tx"] = int(m.group(1))
    m = re.search(r"latency average = ([\d.]+) ms", text)
    if m:
        r["lat_avg_ms"] = float(m.group(1))
    m = re.search(r"average connection time = ([\d.]+) ms", text)
    if m:
        r["conn_avg_ms"] = float(m.group(1))
    m = re.search(r"^tps = ([\d.]+)", text, re.M)
    if m:
        r["tps"] = float(m.group(1))
    return r


def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def read_latencies(prefix):
    lat = []
    d = os.path.dirname(prefix)
    base = os.path.basename(prefix)
    for name in os.listdir(d):
        if name.startswith(base + "."):
            path = os.path.join(d, name)
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[2].isdigit():
                        lat.append(int(parts[2]))
            os.unlink(path)
    lat.sort()
    return lat


def pgbench_cmd(port, args, duration=None, extra=()):
    cmd = ["pgbench", "-n", "-j", "2", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    cmd += list(args)
    if duration:
        cmd += ["-T", str(duration)]
    cmd += list(extra) + ["postgres"]
    return cmd


def run_pgbench(target, scen, duration, workdir, tag, with_log=True):
    spec = PGBENCH_SCENARIOS[scen]
    rec = {"scenario": scen, "target": target.name, "ok": False}
    extra = []
    prefix = os.path.join(workdir, f"lat-{tag}")
    if with_log:
        rate = min(1.0, 60000.0 / (spec["est_tps"] * duration))
        extra = ["-l", f"--log-prefix={prefix}", f"--sampling-rate={rate:.4f}"]
        rec["p99_sampling_rate"] = round(rate, 4)
    cmd = pgbench_cmd(target.port, spec["args"], duration, extra)
    with Meter(target.pids()) as meter:
        p = popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir)
        try:
            out, err = p.communicate(timeout=duration * 4 + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err += "\n(pgbench timed out)"
    rec.update(parse_pgbench(out))
    if with_log:
        lat = read_latencies(prefix)
        if lat:
            rec["p99_ms"] = round(percentile(lat, 0.99) / 1000.0, 3)
            rec["p50_ms"] = round(percentile(lat, 0.50) / 1000.0, 3)
            rec["lat_samples"] = len(lat)
    if p.returncode != 0 or "tps" not in rec or not rec.get("tx"):
        rec["error"] = (f"pgbench exit {p.returncode}: "
                        + " | ".join(err.strip().splitlines()[-3:]))[:400]
    else:
        rec["ok"] = True
    meter.fill(rec, rec.get("tx"))
    return rec


# --------------------------------------------------------------------------- large results
class RssSampler(threading.Thread):
    def __init__(self, pids, interval=0.02):
        super().__init__(daemon=True)
        self.pids, self.interval, self.max_kb = pids, interval, 0
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            self.max_kb = max(self.max_kb, status_kb(self.pids, "VmRSS"))
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.join()


def run_stream(target, scen, rows, workdir):
    rec = {"scenario": scen, "target": target.name, "ok": False, "rows": rows}
    sql = f"SELECT repeat('x', {ROW_BYTES}) FROM generate_series(1, {rows})"
    if scen == "stream-copy":
        cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"COPY ({sql}) TO STDOUT",
               f"host=127.0.0.1 port={target.port} user=postgres dbname=postgres"]
        payload = rows * (ROW_BYTES + 1)
    else:
        script = os.path.join(workdir, "stream-rows.sql")
        with open(script, "w") as f:
            f.write(sql + ";\n")
        cmd = ["pgbench", "-n", "-c", "1", "-j", "1", "-t", "1", "-f", script, "-h",
               "127.0.0.1", "-p", str(target.port), "-U", "postgres", "postgres"]
        payload = rows * ROW_BYTES
    pids = target.pids()
    sampler = RssSampler(pids) if pids else None
    with Meter(pids) as meter:
        if sampler:
            sampler.start()
        try:
            p = popen(cmd, stdout=subprocess.DEVNULL if scen == "stream-copy" else subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True, cwd=workdir)
            out, err = p.communicate(timeout=600)
        finally:
            if sampler:
                sampler.stop()
    if p.returncode != 0:
        rec["error"] = f"exit {p.returncode}: " + " | ".join((err or "").strip().splitlines()[-3:])
    else:
        rec["ok"] = True
        rec["mb"] = round(payload / 1e6, 1)
        rec["mb_s"] = round(payload / 1e6 / meter.elapsed, 1)
    meter.fill(rec)
    if pids:
        rec["sampled_max_rss_kb"] = sampler.max_kb
        peak = meter.peak_rss if meter.peak_rss is not None else sampler.max_kb
        rec["peak_rss_kb"] = peak
        rec["rss_growth_kb"] = max(0, peak - meter.rss_before)
        if rec.get("mb"):
            rec["pooler_cpu_us_mb"] = round(meter.pooler_cpu_s() * 1e6 / rec["mb"], 1)
    return rec


# --------------------------------------------------------------------------- idle clients
def run_idle(target, n, batch, tls=False):
    rec = {"scenario": "idle", "target": target.name, "ok": False, "clients": n}
    pids = target.pids()
    time.sleep(0.5)
    before = status_kb(pids, "VmRSS")
    reset_peak_rss(pids)
    p = popen([sys.executable, os.path.join(HERE, "idle_clients.py"), "--port", str(target.port),
               "-n", str(n), "--batch", str(batch)] + (["--tls"] if tls else []),
              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        ready = json.loads(line) if line.strip() else {}
        if not ready:
            rec["error"] = "idle client helper failed: " + p.stderr.read()[-300:]
            return rec
        time.sleep(1.0)  # let the pooler settle (lazy allocations, slab growth)
        after = status_kb(pids, "VmRSS")
        rec.update({"opened": ready["opened"], "failed": ready["failed"],
                    "open_seconds": ready["seconds"], "rss_before_kb": before,
                    "rss_after_kb": after, "peak_rss_kb": status_kb(pids, "VmHWM"),
                    "alive_during": target.alive()})
        if ready["errors"]:
            rec["errors"] = dict(sorted(ready["errors"].items(), key=lambda kv: -kv[1])[:3])
        if ready["opened"]:
            rec["kb_per_client"] = round((after - before) / ready["opened"], 3)
        p.stdin.write("close\n")
        p.stdin.flush()
        closed = json.loads(p.stdout.readline() or "{}")
        rec["still_open_at_end"] = closed.get("still_open")
        rec["ok"] = ready["opened"] == n and closed.get("still_open") == n
        if not rec["ok"] and "error" not in rec:
            rec["error"] = (f"opened {ready['opened']} of {n}, "
                            f"{closed.get('still_open')} still open at the end")
        p.wait(60)
    finally:
        stop_process(p)
    time.sleep(1.0)
    rec["rss_after_close_kb"] = status_kb(target.pids(), "VmRSS")
    return rec


# --------------------------------------------------------------------------- system calls
def available_syscall_events():
    base = "/sys/kernel/tracing/events/syscalls"
    if not os.path.isdir(base):
        base = "/sys/kernel/debug/tracing/events/syscalls"
    return [s for s in SYSCALL_NAMES if os.path.isdir(os.path.join(base, f"sys_enter_{s}"))]


def perf_works():
    if not shutil.which("perf"):
        return False, "perf not installed"
    try:
        out = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--",
                              "true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    if out.returncode != 0 or "raw_syscalls" not in out.stderr or "not supported" in out.stderr:
        return False, out.stderr.strip()[-200:]
    return True, ""


def run_syscalls(target, scen, duration, workdir, tool, events):
    """A separate pgbench run with the pooler traced; returns counts per transaction."""
    rec = {"scenario": scen, "target": target.name, "ok": False, "tool": tool}
    pids = target.pids()
    if not pids:
        rec["error"] = "pooler not running"
        return rec
    outfile = os.path.join(workdir, f"sys-{target.name}-{scen}.txt")
    pidlist = ",".join(str(x) for x in pids)
    if tool == "perf":
        ev = ["raw_syscalls:sys_enter", "context-switches", "task-clock"] + \
             [f"syscalls:sys_enter_{s}" for s in events]
        tracer_cmd = ["perf", "stat", "-x,", "-o", outfile, "-p", pidlist, "-e", ",".join(ev)]
    else:
        tracer_cmd = ["strace", "-c", "-f", "-o", outfile] + \
                     [a for pid in pids for a in ("-p", str(pid))]
    tracer = popen(tracer_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                   start_new_session=True)
    time.sleep(0.5 if tool == "perf" else 1.0)
    if tracer.poll() is not None:
        rec["error"] = f"{tool} exited: {tracer.stderr.read()[-200:]}"
        return rec
    try:
        b = subprocess.run(pgbench_cmd(target.port, PGBENCH_SCENARIOS[scen]["args"], duration),
                           capture_output=True, text=True, timeout=duration * 4 + 60,
                           env=clean_env(), cwd=workdir)
    finally:
        tracer.send_signal(signal.SIGINT)
        try:
            tracer.wait(30)
        except subprocess.TimeoutExpired:
            stop_process(tracer, signal.SIGKILL)
    res = parse_pgbench(b.stdout)
    tx = res.get("tx")
    if b.returncode != 0 or not tx:
        rec["error"] = "pgbench failed: " + " | ".join(b.stderr.strip().splitlines()[-2:])
        return rec
    rec["tx"] = tx
    rec["tps_traced"] = res.get("tps")
    counts = {}
    try:
        with open(outfile) as f:
            text = f.read()
    except OSError:
        text = ""
    if tool == "perf":
        for line in text.splitlines():
            parts = line.split(",")
            if len(parts) < 3 or line.startswith("#"):
                continue
            try:
                val = float(parts[0])
            except ValueError:
                continue
            name = parts[2]
            if name.startswith("syscalls:sys_enter_"):
                counts[name[len("syscalls:sys_enter_"):]] = val
            elif name == "raw_syscalls:sys_enter":
                rec["total_per_tx"] = round(val / tx, 2)
            elif name == "context-switches":
                rec["ctx_per_tx"] = round(val / tx, 3)
            elif name == "task-clock":
                rec["traced_cpu_us_tx"] = round(val * 1000 / tx, 2)
    else:
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit():
                name = parts[-1]
                calls = int(parts[3])
                if name == "total":
                    rec["total_per_tx"] = round(calls / tx, 2)
                else:
                    counts[name] = calls
    rec["per_tx"] = {k: round(v / tx, 3) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
                     if v > 0}
    rec["ok"] = "total_per_tx" in rec
    if not rec["ok"]:
        rec["error"] = f"no counts from {tool}: {text.strip()[-200:]}"
    return rec


# --------------------------------------------------------------------------- aggregation
def med(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return (statistics.median(vals), min(vals), max(vals))


def aggregate(results, metric):
    """{(scenario, target): (median, min, max)} over rounds for one metric."""
    out = {}
    for r in results["runs"]:
        if r.get("ok") and r.get(metric) is not None:
            out.setdefault((r["scenario"], r["target"]), []).append(r[metric])
    return {k: med(v) for k, v in out.items()}


def ratios(results, metric, num, den):
    """{scenario: (median, min, max)} of per-round ratios num/den for one metric."""
    by = {}
    for r in results["runs"]:
        if r.get("ok") and r.get(metric):
            by[(r["round"], r["scenario"], r["target"])] = r[metric]
    out = {}
    for (rnd, scen, tgt), v in by.items():
        if tgt == num and (rnd, scen, den) in by:
            out.setdefault(scen, []).append(v / by[(rnd, scen, den)])
    return {k: med(v) for k, v in out.items()}


def fmt(v, nd=1, unit=""):
    if v is None:
        return "–"
    if isinstance(v, tuple):
        m, lo, hi = v
        if abs(hi - lo) < 1e-9:
            return fmt(m, nd, unit)
        return f"{fmt(m, nd, unit)} ({fmt(lo, nd)}–{fmt(hi, nd)})"
    if nd == 0:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{nd}f}{unit}"


def fmt_kb(kb):
    if kb is None:
        return "–"
    if isinstance(kb, tuple):
        kb = kb[0]
    return f"{kb / 1024:.1f} MB" if kb >= 10240 else f"{kb:,.0f} KB"


def evaluate_targets(results):
    """One row per target of issue 4: (what, goal, PgBouncer, pgwarden, verdict)."""
    avail = results["targets"]["pgwarden"]["available"] or any(
        r["target"] == "pgwarden" and r.get("ok") for r in results["runs"])
    tps_ratio = ratios(results, "tps", "pgwarden", "pgbouncer")
    mbs_ratio = ratios(results, "mb_s", "pgwarden", "pgbouncer")
    cpu = aggregate(results, "pooler_cpu_us_tx")
    kbpc = aggregate(results, "kb_per_client")
    growth = aggregate(results, "rss_growth_kb")
    sysc = {(s["scenario"], s["target"]): s for s in results["syscalls"] if s.get("ok")}
    rows = []

    def verdict(val, goal, higher_better, unit="", nd=2):
        if not avail:
            return "not measured: pgwarden not available"
        if val is None:
            return "not measured (run failed or skipped)"
        if higher_better:
            if val >= goal:
                return f"**met**: {fmt(val - goal, nd)}{unit} above ({(val / goal - 1) * 100:+.0f} %)"
            return f"**NOT met**: {fmt(goal - val, nd)}{unit} short ({(val / goal - 1) * 100:+.0f} %)"
        if val <= goal:
            return f"**met**: {fmt(goal - val, nd)}{unit} under the limit"
        return f"**NOT met**: {fmt(val - goal, nd)}{unit} over ({val / goal:.2f}× the limit)"

    def ratio_row(what, scen, goal):
        r = tps_ratio.get(scen)
        pgw = aggregate(results, "tps").get((scen, "pgwarden"))
        pgb = aggregate(results, "tps").get((scen, "pgbouncer"))
        rows.append((what, f"≥ {goal:.2f}× PgBouncer", fmt(pgb[0] if pgb else None, 0, " tps"),
                     (fmt(r, 2, "×") + f"; {fmt(pgw[0] if pgw else None, 0, ' tps')}")
                     if r else "–",
                     verdict(r[0] if r else None, goal, True, "×")))

    ratio_row("`-S -c 50` tps", "select", 1.15)
    c = cpu.get(("select", "pgwarden"))
    rows.append(("pooler CPU per transaction, `-S -c 50`", "≤ 10 µs",
                 fmt(cpu.get(("select", "pgbouncer")), 1, " µs"), fmt(c, 1, " µs"),
                 verdict(c[0] if c else None, 10.0, False, " µs", 1)))
    # The 10 µs target assumes PgBouncer at ~15 µs (reference machine); on a slower or shared
    # machine the same-run ratio is the fairer reading: 10/15 = 0.67× PgBouncer.
    cr = ratios(results, "pooler_cpu_us_tx", "pgwarden", "pgbouncer").get("select")
    rows.append(("same, relative to PgBouncer in this run (10 µs / 15 µs)", "≤ 0.67× PgBouncer",
                 "1", fmt(cr, 2, "×") if cr else "–",
                 verdict(cr[0] if cr else None, 10.0 / 15.0, False, "×")))
    s = sysc.get(("select", "pgwarden"))
    sb = sysc.get(("select", "pgbouncer"))
    rows.append(("system calls per transaction, `-S -c 50`", "≤ 4.5",
                 fmt(sb["total_per_tx"], 2) if sb else "–",
                 fmt(s["total_per_tx"], 2) if s else "–",
                 verdict(s["total_per_tx"] if s else None, 4.5, False)
                 if (s or not results.get("syscall_tool_missing"))
                 else "not measured: " + results["syscall_tool_missing"]))
    ratio_row("`-S -C -c 20` tps", "connect", 1.0)
    ratio_row("`-S -M extended` tps", "extended", 1.0)
    ratio_row("TPC-B tps", "tpcb", 1.0)
    ratio_row("`-S -c 250` tps", "c250", 1.0)
    k = kbpc.get(("idle", "pgwarden"))
    if results["meta"].get("tls"):
        # TLS clients: no more than PgBouncer holds for the same clients in the same run.
        kb = kbpc.get(("idle", "pgbouncer"))
        ratio = k[0] / kb[0] if k and kb and kb[0] else None
        rows.append((f"RSS per idle TLS client ({results['meta']['idle_clients']:,} clients)",
                     "≤ 1.00× PgBouncer", fmt(kb, 2, " KB"), fmt(k, 2, " KB"),
                     verdict(ratio, 1.0, False, "×") + f" ({ratio:.3f}× PgBouncer)"
                     if ratio else verdict(None, 1.0, False)))
    else:
        rows.append((f"RSS per idle client ({results['meta']['idle_clients']:,} clients)",
                     "≤ 0.8 KB", fmt(kbpc.get(("idle", "pgbouncer")), 2, " KB"), fmt(k, 2, " KB"),
                     verdict(k[0] if k else None, 0.8, False, " KB")))
    for scen in STREAM_SCENARIOS:
        g = growth.get((scen, "pgwarden"))
        gb = growth.get((scen, "pgbouncer"))
        rows.append((f"large result ({scen}): flat RSS", "peak RSS growth ≤ 16 MB",
                     fmt_kb(gb), fmt_kb(g),
                     verdict(g[0] / 1024 if g else None, 16.0, False, " MB", 1)))
        r = mbs_ratio.get(scen)
        rows.append((f"large result ({scen}): throughput", "≥ 1.00× PgBouncer",
                     fmt(aggregate(results, "mb_s").get((scen, "pgbouncer")), 0, " MB/s"),
                     fmt(r, 2, "×") if r else "–", verdict(r[0] if r else None, 1.0, True, "×")))
    return rows


# --------------------------------------------------------------------------- report
def why_not(results, errors, key):
    if key in errors:
        return errors[key][:200]
    info = results["targets"].get(key[1], {})
    if not info.get("available", True):
        return "not available (see above)"
    return "not run"


def render_report(results):
    meta = results["meta"]
    L = []
    L.append(f"# pgwarden benchmark: {meta['mode']} run, {meta['started']}")
    L.append("")
    L.append(f"- Machine: {meta['cpu']}, {meta['cores']} cores, {meta['mem_gb']} GiB, "
             f"Linux {meta['kernel']}; everything (pgbench, PostgreSQL, poolers) on the same "
             "cores, loopback TCP.")
    L.append(f"- PostgreSQL {meta['pg_version']} (fsync, synchronous_commit and "
             f"full_page_writes off; max_connections {meta.get('max_connections', 300)}, "
             "shared_buffers 256MB), "
             f"{meta['pgbench_version']}, scale {meta['scale']}.")
    L.append(f"- Poolers: {meta['pgbouncer_version']}; pgwarden {meta['pgwarden_version']} "
             f"({meta['pgwarden_bin']}"
             + ("; live manager off" if meta.get("pgwarden_manager") == "off" else "")
             + f"). Transaction pooling, default_pool_size "
             f"{meta['pool_size']}, trust auth, log_connections off, fd limit "
             f"{meta['nofile']}, both reach PostgreSQL over "
             f"{'TCP 127.0.0.1' if meta['server_via'] == 'tcp' else 'the unix socket'}."
             + (" **TLS on every hop**: clients with sslmode=require to the pooler (or to "
                "PostgreSQL for direct), client_tls_sslmode and server_tls_sslmode require, "
                "PostgreSQL ssl=on; certificates from scripts/make-test-certs (EC P-256)."
                if meta.get("tls") else "")
             + (f" pgwarden sends: {meta['pgwarden_sends']}"
                + (" (not to TLS destinations: each of those is one send() through OpenSSL)"
                   if meta.get("tls") else "") + "." if meta.get("pgwarden_sends") else ""))
    L.append(f"- {meta['rounds']} interleaved round(s) of {meta['duration']} s per pgbench run "
             f"(order per scenario: {', '.join(LABEL[t] for t in meta['targets'])}"
             + (", rotated every round" if meta['rounds'] > 1 else "") + "); medians of "
             "rounds with (min–max); ratios are medians of per-round ratios. Elapsed: "
             f"{meta.get('elapsed_s', 0):.0f} s.")
    foreign = [r["foreign_cpu_pct"] for r in results["runs"]
               if r.get("ok") and r.get("foreign_cpu_pct") is not None]
    if foreign:
        fm = statistics.median(foreign)
        L.append(f"- CPU used by other processes during the measured runs: median {fm:.1f} %, "
                 f"max {max(foreign):.1f} % of the machine (approximate: CPU time of user processes "
                 "this run did not start, from /proc)"
                 + (" — **the machine was shared; trust ratios, not raw numbers**."
                    if fm > 10 else "."))
    if meta.get("background_load_pct") is not None:
        L.append(f"- Background CPU load before the run (other processes on this machine): "
                 f"{meta['background_load_pct']} % of all cores"
                 + (" — raw numbers are depressed; compare ratios only."
                    if meta["background_load_pct"] > 10 else "."))
    for t in TARGETS:
        info = results["targets"].get(t)
        if info and not info["available"] and info.get("reason") != "not selected":
            L.append(f"- **{LABEL[t]}: not available** — {info['reason']}")
        for n in (info or {}).get("notes", []):
            L.append(f"- {LABEL[t]}: {n}")
    L.append("")
    L.append("## Targets of issue 4 (pgwarden vs PgBouncer, same run)" if not meta.get("tls") else
             "## Targets (pgwarden vs PgBouncer, same run; with TLS the goals are the two tps "
             "rows, -S -c 50 ≥ 1.15× and -S -C -c 20 ≥ 1.0×, and RSS per idle TLS client ≤ "
             "PgBouncer's; CPU and system-call rows keep the plain run's goals for reference)")
    L.append("")
    L.append("| target | goal | PgBouncer | pgwarden | verdict |")
    L.append("|---|---|---|---|---|")
    for row in evaluate_targets(results):
        L.append("| " + " | ".join(row) + " |")
    L.append("")

    tps = aggregate(results, "tps")
    r_pgb = {t: ratios(results, "tps", t, "pgbouncer") for t in TARGETS}
    r_dir = {t: ratios(results, "tps", t, "direct") for t in TARGETS}
    lat = aggregate(results, "lat_avg_ms")
    p99 = aggregate(results, "p99_ms")
    cpu = aggregate(results, "pooler_cpu_us_tx")
    mcpu = aggregate(results, "machine_cpu_us_tx")
    peak = aggregate(results, "peak_rss_kb")
    sysc = {(s["scenario"], s["target"]): s for s in results["syscalls"] if s.get("ok")}
    errors = {}
    for r in results["runs"]:
        if not r.get("ok"):
            errors.setdefault((r["scenario"], r["target"]), r.get("error", "failed"))

    L.append("## pgbench scenarios")
    L.append("")
    L.append("Pooler CPU = the pooler's utime+stime per transaction; machine CPU = all cores "
             "busy time per transaction; system calls and context switches from a separate "
             "traced run; peak RSS = VmHWM (reset before each run).")
    for scen in [s for s in PGBENCH_SCENARIOS if s in meta["scenarios"]]:
        spec = PGBENCH_SCENARIOS[scen]
        L.append("")
        L.append(f"### {scen}: {spec['title']} (`{spec['cmd']} -T {meta['duration']}`)")
        L.append("")
        L.append("| target | tps | × PgBouncer | × direct | latency avg | p99 | pooler CPU/tx "
                 "| machine CPU/tx | syscalls/tx | ctx switches/tx | peak RSS |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for t in meta["targets"]:
            key = (scen, t)
            if key not in tps:
                L.append(f"| {LABEL[t]} | not measured: {why_not(results, errors, key)} |"
                         + " |" * 9)
                continue
            s = sysc.get(key)
            L.append(
                f"| {LABEL[t]} | {fmt(tps[key], 0)} | "
                f"{fmt(r_pgb[t].get(scen), 2, '×') if t != 'pgbouncer' else '1'} | "
                f"{fmt(r_dir[t].get(scen), 2, '×') if t != 'direct' else '1'} | "
                f"{fmt(lat.get(key), 3, ' ms')} | {fmt(p99.get(key), 3, ' ms')} | "
                f"{fmt(cpu.get(key), 1, ' µs')} | {fmt(mcpu.get(key), 1, ' µs')} | "
                f"{fmt(s['total_per_tx'], 2) if s else '–'} | "
                f"{fmt(s.get('ctx_per_tx'), 2) if s else '–'} | {fmt_kb(peak.get(key))} |")

    mbs = aggregate(results, "mb_s")
    growth = aggregate(results, "rss_growth_kb")
    cpu_mb = aggregate(results, "pooler_cpu_us_mb")
    L.append("")
    L.append("## Large results")
    L.append("")
    L.append(f"`SELECT repeat('x', {ROW_BYTES}) FROM generate_series(1, {meta['stream_rows']:,})`"
             f" ({meta['stream_rows'] * ROW_BYTES / 1e6:,.0f} MB), one client, streamed through "
             "as COPY (psql to /dev/null) and as DataRows (pgbench -t 1, which keeps the "
             "result in the client). RSS growth = peak RSS during the stream − RSS before.")
    L.append("")
    L.append("| scenario | target | MB/s | × PgBouncer | × direct | pooler CPU per MB "
             "| peak RSS | RSS growth |")
    L.append("|---|---|---|---|---|---|---|---|")
    for scen in [s for s in STREAM_SCENARIOS if s in meta["scenarios"]]:
        rp = {t: ratios(results, "mb_s", t, "pgbouncer") for t in TARGETS}
        rd = {t: ratios(results, "mb_s", t, "direct") for t in TARGETS}
        for t in meta["targets"]:
            key = (scen, t)
            if key not in mbs:
                L.append(f"| {scen} | {LABEL[t]} | not measured: "
                         f"{why_not(results, errors, key)} |" + " |" * 5)
                continue
            L.append(f"| {scen} | {LABEL[t]} | {fmt(mbs[key], 0)} | "
                     f"{fmt(rp[t].get(scen), 2, '×') if t != 'pgbouncer' else '1'} | "
                     f"{fmt(rd[t].get(scen), 2, '×') if t != 'direct' else '1'} | "
                     f"{fmt(cpu_mb.get(key), 0, ' µs')} | {fmt_kb(peak.get(key))} | "
                     f"{fmt_kb(growth.get(key))} |")

    if "idle" in meta["scenarios"]:
        L.append("")
        L.append(f"## {meta['idle_clients']:,} idle clients")
        L.append("")
        L.append("Raw-socket clients (bench/idle_clients.py) complete the startup handshake "
                 + ("over TLS (SSLRequest, a TLS 1.3 handshake, then the startup) "
                    if meta.get("tls") else "") +
                 "and stay idle, opened against a freshly restarted pooler (memory freed by "
                 "earlier runs would otherwise be reused and hide the cost); "
                 "RSS per client = (RSS with all clients open − RSS before) / "
                 "clients. Kernel socket buffers are not included. (Direct PostgreSQL is not "
                 "measured: 10,000 backends would not fit.)")
        L.append("")
        L.append("| target | opened | KB per client | RSS before | RSS with clients | "
                 "open time | after close |")
        L.append("|---|---|---|---|---|---|---|")
        for t in [t for t in meta["targets"] if t != "direct"]:
            runs = [r for r in results["runs"] if r["scenario"] == "idle" and r["target"] == t]
            if not runs:
                L.append(f"| {LABEL[t]} | not measured: {why_not(results, {}, ('idle', t))} "
                         "| | | | | |")
                continue
            kb = med([r.get("kb_per_client") for r in runs])
            last = runs[-1]
            opened = f"{last.get('opened', 0):,}"
            if last.get("error"):
                opened += f" ({last['error'][:120]})"
            L.append(f"| {LABEL[t]} | {opened} | {fmt(kb, 3, ' KB')} | "
                     f"{fmt_kb(last.get('rss_before_kb'))} | {fmt_kb(last.get('rss_after_kb'))} | "
                     f"{fmt(last.get('open_seconds'), 1, ' s')} | "
                     f"{fmt_kb(last.get('rss_after_close_kb'))} |")

    if results["syscalls"]:
        L.append("")
        L.append(f"## System calls per transaction (separate {meta['syscall_duration']} s "
                 f"runs traced with {results['syscall_tool']})")
        L.append("")
        L.append("| scenario | target | total | context switches | CPU/tx while traced "
                 "| breakdown |")
        L.append("|---|---|---|---|---|---|")
        for s in results["syscalls"]:
            if not s.get("ok"):
                L.append(f"| {s['scenario']} | {LABEL[s['target']]} | not measured: "
                         f"{s.get('error', '')[:160]} | | | |")
                continue
            brk = ", ".join(f"{k} {v:.2f}" for k, v in list(s["per_tx"].items())[:8])
            L.append(f"| {s['scenario']} | {LABEL[s['target']]} | {s['total_per_tx']:.2f} | "
                     f"{fmt(s.get('ctx_per_tx'), 2)} | {fmt(s.get('traced_cpu_us_tx'), 1, ' µs')}"
                     f" | {brk} |")
    if results.get("syscall_tool_missing"):
        L.append("")
        L.append(f"System calls not counted: {results['syscall_tool_missing']}")

    L.append("")
    L.append("## Not measured here")
    L.append("")
    for n in results.get("not_measured", []):
        L.append(f"- {n}")
    L.append("")
    base = latest_base(results)
    L.append(f"Chart: `{base}.png` (throughput relative to direct, and pooler CPU per "
             f"transaction). Raw numbers of every run: `{base}.json`.")
    return "\n".join(L) + "\n"


def latest_base(results):
    """File name stem of a run's reports: TLS runs keep their own, beside the plain ones."""
    return "latest-tls" if results.get("meta", {}).get("tls") else "latest"


def render_chart(results, png, workdir):
    if not shutil.which("gnuplot"):
        return "gnuplot not installed (bench/setup.sh installs gnuplot-nox)"
    meta = results["meta"]
    tps = aggregate(results, "tps")
    mbs = aggregate(results, "mb_s")
    cpu = aggregate(results, "pooler_cpu_us_tx")
    pb = [s for s in PGBENCH_SCENARIOS if s in meta["scenarios"]]
    scen = pb + [s for s in STREAM_SCENARIOS if s in meta["scenarios"]]
    if not scen:
        return "no throughput scenario to chart"
    rel_file = os.path.join(workdir, "chart-rel.dat")
    cpu_file = os.path.join(workdir, "chart-cpu.dat")
    top = 0.0
    with open(rel_file, "w") as f:
        f.write("# scenario direct pgbouncer pgwarden (throughput / direct)\n")
        for s in scen:
            src = mbs if s in STREAM_SCENARIOS else tps
            d = src.get((s, "direct"))
            vals = []
            for t in TARGETS:
                v = src.get((s, t))
                if v and d:
                    vals.append(f"{v[0] / d[0]:.3f}")
                    top = max(top, v[0] / d[0])
                else:
                    vals.append("NaN")
            short = {"stream-copy": "big-COPY", "stream-rows": "big-rows"}.get(s, s)
            f.write(f"{short} " + " ".join(vals) + "\n")
    with open(cpu_file, "w") as f:
        f.write("# scenario pgbouncer pgwarden (pooler CPU us per transaction)\n")
        for s in pb:
            vals = [f"{cpu[(s, t)][0]:.2f}" if (s, t) in cpu else "NaN"
                    for t in ("pgbouncer", "pgwarden")]
            f.write(f"{s} " + " ".join(vals) + "\n")
    cap = 2.5 if top > 2.5 else max(1.2, top * 1.15)
    title = {t: LABEL[t] for t in TARGETS}
    missing = [LABEL[t] for t in TARGETS
               if not any(r["target"] == t and r.get("ok") for r in results["runs"])]
    note = (f"set label 1 '{', '.join(missing)}: not measured (not available)' "
            "at graph 0.98, graph 0.96 right textcolor rgb '#e8772e'") if missing else ""
    # Clustered histogram geometry: with n series and gap 1, bar i (1-based) of row $0 sits at
    # $0 + (i - (n + 1) / 2) / (n + 1).
    script = f"""
set terminal pngcairo size 1400,600 font 'sans,10'
set output '{png}'
set datafile missing 'NaN'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left
set xtics nomirror
set multiplot layout 1,2 title 'pgwarden vs PgBouncer vs direct PostgreSQL ({meta['mode']} run, {meta['started']}, median of {meta['rounds']} round(s))'
set title 'throughput relative to direct PostgreSQL (bars above {cap:g} are cut; labels give the value)'
set ylabel 'tps (streams: MB/s) / direct'
set yrange [0:{cap * 1.08:.3f}]
cut(v, k) = v > {cap} ? {cap} - k * {cap * 0.06:.3f} : v
{note}
plot '{rel_file}' using 2:xtic(1) title '{title['direct']}' lc rgb '#999999', \\
     '' using 3 title '{title['pgbouncer']}' lc rgb '#3b75af', \\
     '' using 4 title '{title['pgwarden']}' lc rgb '#e8772e', \\
     '' using ($0-0.25):(cut($2,0)):(sprintf('%.2f',$2)) with labels offset 0,0.6 font 'sans,8' notitle, \\
     '' using ($0):(cut($3,1)):(sprintf('%.2f',$3)) with labels offset 0,0.6 font 'sans,8' notitle, \\
     '' using ($0+0.25):(cut($4,2)):(sprintf('%.2f',$4)) with labels offset 0,0.6 font 'sans,8' notitle
set title 'pooler CPU per transaction (utime+stime), lower is better'
set ylabel 'µs per transaction'
set yrange [0:*]
plot '{cpu_file}' using 2:xtic(1) title '{title['pgbouncer']}' lc rgb '#3b75af', \\
     '' using 3 title '{title['pgwarden']}' lc rgb '#e8772e', \\
     '' using ($0-1.0/6):2:(sprintf('%.1f',$2)) with labels offset 0,0.6 font 'sans,8' notitle, \\
     '' using ($0+1.0/6):3:(sprintf('%.1f',$3)) with labels offset 0,0.6 font 'sans,8' notitle
unset multiplot
"""
    out = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    if out.returncode != 0:
        return "gnuplot failed: " + out.stderr.strip()[-300:]
    return None


# --------------------------------------------------------------------------- main
def parse_args(argv):
    ap = argparse.ArgumentParser(description="pgwarden vs PgBouncer vs direct PostgreSQL",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="1 round, 5 s runs, smaller stream, fewer traced runs (< 3 minutes)")
    ap.add_argument("--pgwarden", default=os.path.join(ROOT, "build", "pgwarden"),
                    help="pgwarden binary")
    ap.add_argument("--pgbouncer", default=shutil.which("pgbouncer") or "/usr/sbin/pgbouncer")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    ap.add_argument("--duration", type=int, help="seconds per pgbench run (default 20, quick 5)")
    ap.add_argument("--scale", type=int, default=10, help="pgbench -i scale")
    ap.add_argument("--pool-size", type=int, default=20)
    ap.add_argument("--server-via", choices=["tcp", "unix"], default="tcp",
                    help="how both poolers reach PostgreSQL")
    ap.add_argument("--tls", action="store_true",
                    help="TLS on every hop: PostgreSQL ssl=on, clients (pgbench, idle clients) "
                         "with sslmode=require to the pooler or PostgreSQL, the poolers with "
                         "client_tls_sslmode and server_tls_sslmode require; reports go to "
                         "latest-tls.* (needs --server-via tcp)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                    help="comma list of " + ",".join(ALL_SCENARIOS))
    ap.add_argument("--idle-clients", type=int, default=10000)
    ap.add_argument("--pgwarden-manager", choices=["on", "off"], default="on",
                    help="pgwarden's live manager ([manager] live; off measures the pooler "
                         "without it)")
    ap.add_argument("--stream-mb", type=int, help="size of the large result (default 500, quick 200)")
    ap.add_argument("--syscall-duration", type=int, help="seconds per traced run (default 8, quick 3)")
    ap.add_argument("--syscall-scenarios",
                    help="scenarios traced for system calls (default all pgbench ones; "
                         "quick: select,connect); 'none' to skip")
    ap.add_argument("--syscall-tool", choices=["auto", "perf", "strace"], default="auto",
                    help="how system calls are counted (auto: perf if it can, else strace)")
    ap.add_argument("--start-timeout", type=float, default=10.0,
                    help="seconds a pooler has to answer SELECT 1")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    ap.add_argument("--render", metavar="JSON",
                    help="only re-render the report and chart from a results JSON file")
    ap.add_argument("--update-docs", action="store_true",
                    help="also paste the report into docs/BENCHMARKS.md (Latest report)")
    a = ap.parse_args(argv)
    q = a.quick
    a.rounds = a.rounds or (1 if q else 3)
    a.duration = a.duration or (5 if q else 20)
    a.stream_mb = a.stream_mb or (200 if q else 500)
    a.syscall_duration = a.syscall_duration or (3 if q else 8)
    if a.syscall_scenarios is None:
        a.syscall_scenarios = "select,connect" if q else ",".join(PGBENCH_SCENARIOS)
    a.syscall_scenarios = [] if a.syscall_scenarios == "none" else \
        [s for s in a.syscall_scenarios.split(",") if s in PGBENCH_SCENARIOS]
    if a.tls and a.server_via != "tcp":
        ap.error("--tls needs --server-via tcp (a unix socket is never encrypted)")
    a.targets = [t for t in TARGETS if t in a.targets.split(",")]
    a.scenarios = [s for s in ALL_SCENARIOS if s in a.scenarios.split(",")]
    return a


def raise_nofile(want=65536):
    """Raises the fd limit the poolers, pgbench and the idle clients inherit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new_hard in ((max(hard, want),) if os.geteuid() == 0 else ()) + (hard,):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, new_hard)), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def background_load(seconds=2.0):
    """Share of the machine's CPU busy before we start anything (other users of the cores)."""
    b0, t0, _ = machine_cpu()
    time.sleep(seconds)
    b1, t1, _ = machine_cpu()
    return round(100.0 * (b1 - b0) / (t1 - t0), 1) if t1 > t0 else None


def on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    opts = parse_args(argv if argv is not None else sys.argv[1:])
    if opts.render:
        with open(opts.render) as f:
            results = json.load(f)
        workdir = tempfile.mkdtemp(prefix="pgwarden-bench-render-")
        try:
            os.makedirs(opts.out, exist_ok=True)
            base = latest_base(results)
            err = render_chart(results, os.path.join(opts.out, f"{base}.png"), workdir)
            report = render_report(results)
            with open(os.path.join(opts.out, f"{base}.md"), "w") as f:
                f.write(report)
            if opts.update_docs:
                update_docs(report, base)
            log(f"rendered {opts.out}/{base}.md" + (f" ({err})" if err else f" and {base}.png"))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, on_sigterm)
    nofile = raise_nofile()
    if opts.tls:
        CLIENT_ENV["PGSSLMODE"] = "require"
    t_start = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = tempfile.mkdtemp(prefix="pgwarden-bench-")
    os.chmod(workdir, 0o755)
    pg = None
    targets = {}
    results = {"runs": [], "syscalls": [], "targets": {}, "not_measured": []}
    try:
        for tool in ("pgbench", "psql"):
            if not shutil.which(tool):
                sys.exit(f"{tool} not found: run bench/setup.sh")
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
        cpu_model = "unknown CPU"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        pgw_version = tool_version([opts.pgwarden, "--version"]) \
            if os.access(opts.pgwarden, os.X_OK) else "(binary missing)"
        pgw_version = re.sub(r"^pgwarden\s+", "", pgw_version).split(" - ")[0]
        git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        if git:
            pgw_version += f", git {git}"
        results["meta"] = {
            "mode": "quick" if opts.quick else "full",
            "started": started.strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu_model, "cores": os.cpu_count(), "mem_gb": mem_gb,
            "kernel": platform.release(), "scale": opts.scale, "pool_size": opts.pool_size,
            "rounds": opts.rounds, "duration": opts.duration, "server_via": opts.server_via,
            "tls": opts.tls,
            "targets": opts.targets, "scenarios": opts.scenarios,
            "idle_clients": opts.idle_clients, "nofile": nofile,
            "stream_rows": opts.stream_mb * 1000000 // ROW_BYTES,
            "syscall_duration": opts.syscall_duration,
            "pgbench_version": tool_version(["pgbench", "--version"]),
            "pgbouncer_version": tool_version([opts.pgbouncer, "--version"]),
            "pgwarden_version": pgw_version, "pgwarden_bin": opts.pgwarden,
            "pgwarden_manager": opts.pgwarden_manager,
        }

        results["meta"]["background_load_pct"] = background_load()
        log(f"work dir {workdir}; background CPU load "
            f"{results['meta']['background_load_pct']} %; starting PostgreSQL")
        # 250 direct clients plus both poolers' server connections, with room to spare.
        pg = BenchPg(max_connections=max(300, 250 + 2 * opts.pool_size + 20), ssl=opts.tls)
        pg.start()
        results["meta"]["pg_version"] = pg.psql("SHOW server_version")
        results["meta"]["max_connections"] = pg.max_connections
        log(f"PostgreSQL {results['meta']['pg_version']} on port {pg.port}; "
            f"pgbench -i -s {opts.scale}")
        subprocess.run(["pgbench", "-i", "-q", "-s", str(opts.scale), "-h", pg.socket_dir,
                        "-p", str(pg.port), "-U", "postgres", "postgres"], check=True,
                       capture_output=True, env=clean_env())
        pg.psql("CHECKPOINT")
        with open(os.path.join(pg.datadir, "postmaster.pid")) as f:
            OWN_ROOTS.append(int(f.readline()))

        used = {pg.port}

        def port():
            while True:
                p = free_port(20000, 32000)
                if p not in used:
                    used.add(p)
                    return p

        if "direct" in opts.targets:
            targets["direct"] = Direct("direct", pg.port)
            targets["direct"].version = results["meta"]["pg_version"]
        if "pgbouncer" in opts.targets:
            targets["pgbouncer"] = Pooler("pgbouncer", opts.pgbouncer, [], workdir, port(), pg,
                                          opts)
        if "pgwarden" in opts.targets:
            targets["pgwarden"] = Pooler("pgwarden", opts.pgwarden, ["serve", "-c"], workdir,
                                         port(), pg, opts)
        for name in ("pgbouncer", "pgwarden"):
            t = targets.get(name)
            if not t:
                continue
            if not os.access(t.binary, os.X_OK):
                t.available, t.reason = False, f"binary {t.binary} not found or not executable"
            else:
                t.start()
            log(f"{LABEL[name]}: " + (f"answering on port {t.port}" if t.available
                                      else f"NOT AVAILABLE: {t.reason}"))
            if name == "pgwarden" and t.available:
                results["meta"]["pgwarden_sends"] = pgwarden_send_mode(t.logfile)

        # Warm-up: opens the server pools and the caches; not recorded.
        for t in targets.values():
            if t.ensure():
                subprocess.run(pgbench_cmd(t.port, ["-S", "-c", "20"], 1 if opts.quick else 3),
                               capture_output=True, env=clean_env(), cwd=workdir)

        rows = opts.stream_mb * 1000000 // ROW_BYTES
        for rnd in range(1, opts.rounds + 1):
            # The order rotates every round: no target always runs right after another's
            # load (or first, on a cooler machine).
            shift = (rnd - 1) % len(opts.targets)
            order = opts.targets[shift:] + opts.targets[:shift]
            for scen in opts.scenarios:
                for name in order:
                    t = targets[name]
                    if scen == "idle" and name == "direct":
                        continue
                    if not t.ensure():
                        continue
                    tag = f"r{rnd}-{scen}-{name}"
                    if scen in PGBENCH_SCENARIOS:
                        rec = run_pgbench(t, scen, opts.duration, workdir, tag)
                    elif scen in STREAM_SCENARIOS:
                        rec = run_stream(t, scen, rows, workdir)
                    else:
                        if not t.restart_fresh(port()):
                            log(f"{LABEL[name]} did not restart: {t.reason}")
                            continue
                        rec = run_idle(t, opts.idle_clients, 100, opts.tls)
                    rec["round"] = rnd
                    if not rec["ok"] and not t.alive() and name != "direct":
                        rec["error"] = (rec.get("error", "") + f"; {LABEL[name]} died: "
                                        f"{t.log_tail(300)}")
                    results["runs"].append(rec)
                    summary = ", ".join(f"{k}={rec[k]}" for k in (
                        "tps", "lat_avg_ms", "p99_ms", "pooler_cpu_us_tx", "mb_s",
                        "rss_growth_kb", "kb_per_client", "error") if rec.get(k) is not None)
                    log(f"round {rnd} {scen:12s} {LABEL[name]:10s} {summary}")
                    time.sleep(0.5)

        # System calls per transaction: separate, shorter, traced runs.
        ok, why = perf_works() if opts.syscall_tool != "strace" else (False, "not asked for")
        tool = "perf" if ok else ("strace" if shutil.which("strace") and
                                  opts.syscall_tool != "perf" else None)
        results["syscall_tool"] = "perf stat (tracepoints)" if tool == "perf" else \
            ("strace -c -f" if tool else "nothing")
        if not ok and opts.syscall_tool != "strace":
            results["not_measured"].append(f"perf cannot count system-call tracepoints here "
                                           f"({why}); " + ("strace -c used instead (it slows "
                                                           "the pooler, counts stay exact)"
                                                           if tool else "and strace is missing"))
        if tool is None and opts.syscall_scenarios:
            results["syscall_tool_missing"] = "neither perf nor strace works here"
        events = available_syscall_events() if tool == "perf" else []
        for scen in opts.syscall_scenarios if tool else []:
            for name in ("pgbouncer", "pgwarden"):
                t = targets.get(name)
                if not t or not t.ensure():
                    continue
                rec = run_syscalls(t, scen, opts.syscall_duration, workdir, tool, events)
                results["syscalls"].append(rec)
                log(f"syscalls {scen:10s} {LABEL[name]:10s} "
                    + (f"{rec['total_per_tx']}/tx, ctx {rec.get('ctx_per_tx')}/tx"
                       if rec["ok"] else rec.get("error", "")))
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        results["meta"]["interrupted"] = True
        raise
    finally:
        for name, t in targets.items():
            results["targets"][name] = {"available": t.available, "reason": t.reason,
                                        "notes": t.notes, "port": t.port}
            t.stop()
        cleanup_children()
        if pg is not None:
            pg.cleanup()
        results.setdefault("meta", {})["elapsed_s"] = round(time.monotonic() - t_start, 1)
        if results.get("meta", {}).get("pg_version") and not results["meta"].get("interrupted"):
            write_results(results, opts, workdir, started)
        if opts.keep:
            log(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


DOCS = os.path.join(ROOT, "docs", "BENCHMARKS.md")


def update_docs(report, base="latest"):
    """Replaces the text between the markers in docs/BENCHMARKS.md with the report, its
    headings moved two levels down (it sits under '## Latest report'). A TLS run (base
    latest-tls) has markers of its own."""
    BEGIN, END = f"<!-- {base}-report:begin -->", f"<!-- {base}-report:end -->"
    with open(DOCS) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        log(f"{DOCS} has no {BEGIN} … {END} markers; not updated")
        return
    body = re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + 2) + " ", report, flags=re.M)
    body = body.replace(f"Chart: `{base}.png`", f"Chart: [`bench/results/{base}.png`]"
                        f"(../bench/results/{base}.png)")
    body = body.replace(f"Raw numbers of every run: `{base}.json`",
                        f"Raw numbers of every run: `bench/results/{base}.json`")
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(DOCS, "w") as f:
        f.write(head + BEGIN + "\n\n" + body.strip() + "\n\n![latest chart]"
                f"(../bench/results/{base}.png)\n\n" + END + tail)
    log(f"pasted the report into {DOCS}")


def write_results(results, opts, workdir, started):
    for t in TARGETS:
        results["targets"].setdefault(t, {"available": False, "reason": "not selected",
                                          "notes": []})
    nm = results["not_measured"]
    nm.append("Hardware counters (instructions, cycles, cache misses): this VM exposes none; "
              "perf uses software events and tracepoints only.")
    nm.append("Kernel socket-buffer memory of idle clients: RSS counts only the pooler's own "
              "memory.")
    if results["syscalls"] and not any(s.get("ok") for s in results["syscalls"]):
        nm.append("System calls per transaction: no traced run succeeded.")
    if not results["targets"]["pgwarden"]["available"] and not any(
            r["target"] == "pgwarden" and r.get("ok") for r in results["runs"]):
        nm.append("pgwarden: " + results["targets"]["pgwarden"]["reason"])
    os.makedirs(opts.out, exist_ok=True)
    base = latest_base(results)
    stamp = started.strftime("%Y%m%d-%H%M%S") + ("-quick" if opts.quick else "-full") \
        + ("-tls" if opts.tls else "")
    png = os.path.join(opts.out, f"{base}.png")
    err = render_chart(results, png, workdir)
    if err:
        nm.append(f"Chart: {err}")
    report = render_report(results)
    for name, text in ((f"{base}.md", report),
                       (f"{base}.json", json.dumps(results, indent=1))):
        with open(os.path.join(opts.out, name), "w") as f:
            f.write(text)
        shutil.copyfile(os.path.join(opts.out, name),
                        os.path.join(opts.out, f"{stamp}.{name.rsplit('.', 1)[1]}"))
    if not err:
        shutil.copyfile(png, os.path.join(opts.out, f"{stamp}.png"))
    if opts.update_docs:
        update_docs(report, base)
    print()
    print(report)
    log(f"report: {os.path.join(opts.out, base + '.md')} (copy {stamp}.md), chart {base}.png")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        cleanup_children()
        sys.exit(130)
