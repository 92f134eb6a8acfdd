#!/usr/bin/env python3
"""Soak: a mixed workload through pgwarden for a while, then a verdict.

    scripts/soak.py --bin build/pgwarden --duration 600 [--report FILE]
    make soak DURATION=3600

Against a throwaway PostgreSQL (tests/integration/pgfixture.py), one pgwarden serves a
transaction pool and a session pool of the pgbench tables while these run at once:
  - pgbench -M simple, -M extended and -M prepared on the transaction pool, and -C (a new
    connection per transaction) on the session pool;
  - a client that sends cancel requests to its own long queries (expects 57014);
  - a client that is killed with KILL_CLIENT now and then (expects to be cut off);
  - RELOAD every 5 s, and SHOW POOLS/STATS/CLIENTS/SERVERS every second on the console.
Every 5 s it samples pgwarden's RSS and open descriptors and compares SHOW SERVERS with the
server's pg_stat_activity (pgwarden's backends by client port).

It passes when: no error that was not caused on purpose (pgbench failures, unexpected
errors in the cancel or console clients); RSS and descriptors flat after warm-up (the last
third within 10 % / 8 descriptors of the first third's maximum); no server connection leaked
(at rest, the server holds no more backends of pgwarden's than SHOW SERVERS lists); pgwarden alive. Prints a table and exits 0 or 1.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import psycopg  # noqa: E402
from pgfixture import PgServer, free_port  # noqa: E402

POOL_SIZE = 8


def console_rows(port, sql):
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=pgbouncer "
                         "sslmode=disable", autocommit=True) as c:
        res = c.pgconn.exec_(sql.encode())
        if res.status != psycopg.pq.ExecStatus.TUPLES_OK:
            return []
        names = [res.fname(i).decode() for i in range(res.nfields)]
        return [{names[i]: (res.get_value(r, i) or b"").decode() for i in range(res.nfields)}
                for r in range(res.ntuples)]


def start_pgwarden(binary, pg, workdir):
    port = free_port()
    ini = os.path.join(workdir, "soak.ini")
    with open(os.path.join(workdir, "users.txt"), "w") as f:
        f.write('"postgres" "postgres-pw"\n')
    with open(ini, "w") as f:
        f.write(f"""[databases]
tx = host={pg.socket_dir} port={pg.port} dbname=postgres pool_mode=transaction
sess = host={pg.socket_dir} port={pg.port} dbname=postgres pool_mode=session
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {workdir}
auth_type = trust
auth_file = {workdir}/users.txt
default_pool_size = {POOL_SIZE}
max_client_conn = 200
admin_users = postgres
logfile = {workdir}/pgwarden.log
log_connections = 0
log_disconnections = 0
""")
    proc = subprocess.Popen([binary, "serve", "-c", ini], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(workdir, "stderr.log"), "w"))
    for _ in range(100):
        try:
            console_rows(port, "SHOW VERSION")
            return proc, port
        except psycopg.Error:
            time.sleep(0.1)
    raise RuntimeError("pgwarden did not start")


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.unexpected = []

    def add(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def error(self, what):
        with self.lock:
            self.unexpected.append(what)


def pgbench(pg, port, db, mode, clients, seconds, connect_each, tally):
    args = [pg.bin("pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-n",
            "-M", mode, "-c", str(clients), "-j", "2", "-T", str(seconds), "-S"]
    if connect_each:
        args.append("-C")
    out = subprocess.run(args + [db], capture_output=True, text=True,
                         env={**os.environ, "PGSSLMODE": "disable"})
    label = f"pgbench {db} {mode}{' -C' if connect_each else ''}"
    done = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    tally.add(label, int(done.group(1)) if done else 0)
    if out.returncode != 0 or (failed and int(failed.group(1)) > 0) or not done:
        tally.error(f"{label}: exit {out.returncode}: {(out.stderr or out.stdout)[-400:]}")


def canceller(port, stop, tally):
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=tx sslmode=disable"
    while not stop.is_set():
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                # A cancel that reaches the server before the query runs (queued for a server
                # on a loaded machine, or still on its way) finds nothing to cancel, in
                # PostgreSQL and in PgBouncer alike, and one that finds two cancels of the same
                # server still in flight is dropped: cancel every 0.25 s until the query ends.
                # Only a query that outlives all of them (10 s, about 40) is an error; the
                # worst case seen so far needed 11 on a machine at load 4.
                done = threading.Event()
                sent = [0]

                def keep_cancelling():
                    while not done.wait(0.25):
                        sent[0] += 1
                        c.cancel()

                t = threading.Thread(target=keep_cancelling)
                t.start()
                try:
                    c.execute("SELECT pg_sleep(10)")
                    tally.error(f"cancel: the query was not cancelled ({sent[0]} cancel requests)")
                except psycopg.errors.QueryCanceled:
                    tally.add("cancels")
                    if sent[0] > 1:
                        tally.add("cancels that needed more than one request")
                done.set()
                t.join()
                # The connection is usable after the cancel.
                if c.execute("SELECT 41 + 1").fetchone()[0] != 42:
                    tally.error("cancel: wrong result after a cancel")
        except psycopg.Error as e:
            tally.error(f"cancel client: {e}")
        stop.wait(0.5)


def victim(port, stop, tally):
    """A client that gets killed on purpose: only the kill may end it."""
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=tx sslmode=disable"
    while not stop.is_set():
        try:
            with psycopg.connect(dsn, autocommit=True, application_name="soak-victim") as c:
                while not stop.is_set():
                    c.execute("SELECT 1")
                    stop.wait(0.05)
        except psycopg.OperationalError as e:
            if "terminated by the admin console" in str(e) or "server closed" in str(e):
                tally.add("clients killed on purpose")
            else:
                tally.error(f"victim: {e}")
        stop.wait(0.2)


def admin(port, stop, tally):
    n = 0
    while not stop.is_set():
        try:
            for sql in ("SHOW POOLS", "SHOW STATS", "SHOW CLIENTS", "SHOW SERVERS"):
                console_rows(port, sql)
            tally.add("console queries", 4)
            if n % 5 == 0:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres "
                                     "dbname=pgbouncer sslmode=disable", autocommit=True) as c:
                    if c.pgconn.exec_(b"RELOAD").status != psycopg.pq.ExecStatus.COMMAND_OK:
                        tally.error("RELOAD refused")
                    tally.add("reloads")
            if n % 3 == 0:
                ids = [r["id"] for r in console_rows(port, "SHOW CLIENTS")
                       if r["application_name"] == "soak-victim"]
                if ids:
                    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres "
                                         "dbname=pgbouncer sslmode=disable",
                                         autocommit=True) as c:
                        c.pgconn.exec_(f"KILL_CLIENT {ids[0]}".encode())
        except psycopg.Error as e:
            tally.error(f"console: {e}")
        n += 1
        stop.wait(1.0)


def sample(proc, port, pg):
    rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{proc.pid}/status").read()).group(1))
    fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    # pgwarden reaches PostgreSQL over the unix socket: its backends have no client port;
    # count them instead.
    backends = int(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                           "'client backend' AND client_addr IS NULL AND pid <> "
                           "pg_backend_pid()"))
    return {"rss_kb": rss, "fds": fds, "servers_listed": len(console_rows(port, "SHOW SERVERS")),
            "server_backends": backends}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "pgwarden"))
    ap.add_argument("--duration", type=int, default=120, help="seconds (default 120)")
    ap.add_argument("--report", help="also write the summary here")
    args = ap.parse_args()
    pg = PgServer()
    pg.start()
    workdir = tempfile.mkdtemp(prefix="pgwarden-soak-")
    proc = None
    tally = Tally()
    samples = []
    try:
        pg.pgbench_init()
        proc, port = start_pgwarden(os.path.abspath(args.bin), pg, workdir)
        stop = threading.Event()
        d = args.duration
        jobs = [threading.Thread(target=pgbench, args=a) for a in (
            (pg, port, "tx", "simple", 8, d, False, tally),
            (pg, port, "tx", "extended", 4, d, False, tally),
            (pg, port, "tx", "prepared", 4, d, False, tally),
            (pg, port, "sess", "simple", 4, d, True, tally))]
        jobs += [threading.Thread(target=f, args=(port, stop, tally))
                 for f in (canceller, victim, admin)]
        for j in jobs:
            j.start()
        t0 = time.time()
        while time.time() - t0 < d:
            time.sleep(5)
            if proc.poll() is not None:
                tally.error(f"pgwarden exited with {proc.returncode}")
                break
            s = sample(proc, port, pg)
            s["t"] = round(time.time() - t0)
            samples.append(s)
            print(f"  t={s['t']:>5}s rss={s['rss_kb']} kB fds={s['fds']} "
                  f"servers={s['servers_listed']} backends={s['server_backends']}", flush=True)
        stop.set()
        for j in jobs:
            j.join(d + 120)
        # Quiet now: every server pgwarden holds is listed, and nothing else is open.
        time.sleep(2)
        final = sample(proc, port, pg) if proc.poll() is None else None
    finally:
        if proc and proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        pg.cleanup()
    # A sanitizer build reports memory errors and leaks on stderr (at exit for leaks).
    with open(os.path.join(workdir, "stderr.log"), errors="replace") as f:
        stderr = f.read()
    sanitizer = [ln for ln in stderr.splitlines()
                 if "Sanitizer" in ln or "runtime error:" in ln][:3]

    verdicts = []
    third = max(1, len(samples) // 3)
    if len(samples) >= 3:
        warm, late = samples[:third], samples[-third:]
        rss_ok = max(s["rss_kb"] for s in late) <= max(s["rss_kb"] for s in warm) * 1.10
        fds_ok = max(s["fds"] for s in late) <= max(s["fds"] for s in warm) + 8
        # A sanitizer build holds freed memory in quarantine: its RSS says nothing about leaks
        # (LeakSanitizer reports those at exit, checked below).
        sanitized = "ASAN_OPTIONS" in os.environ
        verdicts += [("RSS flat after warm-up", rss_ok or sanitized,
                      f"{max(s['rss_kb'] for s in warm)} -> {max(s['rss_kb'] for s in late)} kB"
                      + (" (not judged: sanitizer build)" if sanitized else "")),
                     ("descriptors flat after warm-up", fds_ok,
                      f"{max(s['fds'] for s in warm)} -> {max(s['fds'] for s in late)}")]
    leak_ok = final is not None and final["server_backends"] <= final["servers_listed"]
    verdicts.append(("no server connection leaked", leak_ok,
                     f"at rest: {final['servers_listed']} listed, {final['server_backends']} "
                     "backends" if final else "pgwarden gone"))
    verdicts.append(("no sanitizer report", not sanitizer, "; ".join(sanitizer) or "none"))
    verdicts.append(("no unexpected error", not tally.unexpected,
                     "; ".join(tally.unexpected[:5]) or "none"))
    lines = [f"soak: {args.duration} s, {len(samples)} samples"]
    lines += [f"  {k}: {v}" for k, v in sorted(tally.counts.items())]
    lines += [f"  [{'PASS' if ok else 'FAIL'}] {name}: {why}" for name, ok, why in verdicts]
    passed = all(ok for _, ok, _ in verdicts)
    lines.append(f"{'1 passed, 0 failed' if passed else '0 passed, 1 failed'}")
    text = "\n".join(lines)
    print(text)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
