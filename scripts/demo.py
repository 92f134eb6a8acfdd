#!/usr/bin/env python3
"""make demo: a throwaway PostgreSQL, then pgwarden's two ways of working.
1. serve: pgwarden pools a workload that queues and an application that leaks a transaction;
   its live manager grows the pool, finds the leak, rolls it back, and shrinks the pool again.
2. inspect: planted connection problems straight on PostgreSQL, then full-analysis and a
   kill-idle plan. Cleans up after itself, even on Ctrl-C."""
import argparse
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import psycopg  # noqa: E402
from pgfixture import PgServer  # noqa: E402
from serve_helpers import Pooler, console_rows  # noqa: E402


def banner(text):
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def print_rows(rows, cols):
    if not rows:
        print("  (none)")
        return
    widths = [max(len(c), *(len(str(r.get(c, ""))[:60]) for r in rows)) for c in cols]
    print("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  " + "  ".join(str(r.get(c, ""))[:60].ljust(w) for c, w in zip(cols, widths)))


def console(pooler, sql, cols):
    print(f"$ psql -p {pooler.port} pgbouncer -c '{sql}'")
    print_rows(console_rows(pooler, sql), cols)


def serve_demo(server, binary):
    banner("pgwarden serve: a pooler that watches its own pools")
    pooler = Pooler(binary, server, pool_mode="transaction",
                    settings={"default_pool_size": "2", "admin_users": "postgres",
                              "query_wait_timeout": "60"},
                    manager={"max_pool_size": "6", "leak_hold_threshold": "6s",
                             "leak_reclaim": "rollback", "shrink_rate": "100%",
                             "health_check_interval": "5s"}).start()
    print(f"pgwarden on 127.0.0.1:{pooler.port}: transaction pooling, default_pool_size 2,\n"
          "[manager] max_pool_size 6, leak_hold_threshold 6s, leak_reclaim rollback")
    leaker = None
    try:
        load = subprocess.Popen(
            [server.bin("pgbench"), "-n", "-c", "10", "-j", "2", "-T", "10", "-S",
             "-h", "127.0.0.1", "-p", str(pooler.port), "-U", "postgres", "postgres"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("pgbench: 10 clients on a pool of 2 (they queue)")
        leaker = psycopg.connect(pooler.dsn(application_name="billing-worker"))
        leaker.execute("UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1")
        print("'billing-worker' updated a row and never committed: it holds a server and a lock")
        time.sleep(4)
        banner("The manager found the leak (and sent it a notice)")
        console(pooler, "SHOW LEAKS", ["client", "pid", "application", "state", "score",
                                       "idle_s", "reclaim", "reason"])
        time.sleep(5)
        banner("...rolled it back, and grew the pool for the queue")
        console(pooler, "SHOW SCALING", ["database", "configured", "min", "max", "size",
                                         "servers", "waiting", "decision", "status"])
        load.wait(timeout=60)
        try:
            leaker.execute("SELECT 1")
            print("billing-worker: its next statement ran (not reclaimed yet)")
        except psycopg.Error as e:
            print(f"billing-worker's next statement: ERROR {e.sqlstate}: {e}".strip())
        print("pgbench finished; the pool shrinks back after sustained idleness...")
        time.sleep(13)
        banner("Every decision, with its reason")
        console(pooler, "SHOW EVENTS", ["seq", "event", "database", "client", "before",
                                        "after", "reason"])
        console(pooler, "SHOW SCALING", ["database", "configured", "size", "servers",
                                         "decision", "status"])
    finally:
        if leaker is not None:
            leaker.close()
        pooler.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True, help="path to the pgwarden binary")
    args = ap.parse_args()

    server = PgServer()
    held = []
    stop = threading.Event()
    workers = []
    try:
        banner("Starting a throwaway PostgreSQL")
        server.start()
        print(f"PostgreSQL on 127.0.0.1:{server.port} (data in {server.base})")
        subprocess.run([server.bin("pgbench"), "-i", "-q", "-s", "2", "-h", server.socket_dir,
                        "-p", str(server.port), "-U", "postgres", "postgres"],
                       check=True, capture_output=True)
        server.psql("GRANT ALL ON ALL TABLES IN SCHEMA public TO app_user")

        serve_demo(server, args.bin)

        banner("pgwarden inspect: any PostgreSQL, through a connection string")

        banner("Planting problems")
        # A steady, healthy workload so rates and Little's law have something to measure.
        workload = subprocess.Popen(
            [server.bin("pgbench"), "-n", "-c", "4", "-j", "2", "-T", "20", "-S",
             "-h", server.socket_dir, "-p", str(server.port), "-U", "postgres", "postgres"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        # Idle in transaction: a worker that updated a row and forgot to commit, plus one
        # more that opened a transaction and went away to do something else.
        for i in range(2):
            c = psycopg.connect(server.dsn(user="app_user", dbname="postgres",
                                           application_name="billing-worker"))
            if i == 0:
                c.execute("UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1")
            else:
                c.execute("SELECT count(*) FROM pgbench_accounts WHERE aid < 100")
            held.append(c)
        print("2 'billing-worker' sessions left idle in transaction (one holds a row lock)")

        # A session blocked behind that lock.
        def blocked():
            try:
                with psycopg.connect(server.dsn(user="postgres",
                                                application_name="checkout-api")) as c:
                    c.execute("SET statement_timeout = '60s'")
                    c.execute("UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1")
            except Exception:
                pass

        t = threading.Thread(target=blocked, daemon=True)
        t.start()
        print("1 'checkout-api' session waiting on that lock")

        # Plain idle sessions from a dashboard that never closes its pool.
        for _ in range(5):
            c = psycopg.connect(server.dsn(user="app_user", application_name="reporting-dashboard"),
                                autocommit=True)
            c.execute("SELECT 1")
            held.append(c)
        print("5 'reporting-dashboard' sessions left idle")

        # A serverless function that opens a connection per call and never closes it.
        def leaky():
            while not stop.is_set() and len(held) < 60:
                c = psycopg.connect(server.dsn(user="app_user", application_name="serverless-fn"),
                                    autocommit=True)
                c.execute("SELECT 1")
                held.append(c)
                time.sleep(0.25)

        leak_thread = threading.Thread(target=leaky, daemon=True)
        leak_thread.start()
        workers.append(leak_thread)
        print("'serverless-fn' opens a new connection every 250 ms and never closes it")

        time.sleep(4)

        banner("pgwarden full-analysis")
        target = server.dsn(user="postgres")
        cmd = [args.bin, "full-analysis", "--target", target, "--interval", "2s",
               "--leak-hold-threshold", "3s", "--idle-timeout", "3s"]
        print("$ pgwarden full-analysis --target '<dsn>' --interval 2s "
              "--leak-hold-threshold 3s --idle-timeout 3s", flush=True)
        rc = subprocess.run(cmd).returncode
        print(f"(exit code {rc}: 0 ok, 1 warning, 2 critical)")

        banner("pgwarden kill-idle (dry run: plans, changes nothing)")
        subprocess.run([args.bin, "kill-idle", "--target", target, "--idle-timeout", "3s",
                        "--leak-hold-threshold", "3s"])
        print("\nAdd --execute to terminate the planned sessions; --format json for machines.")
        stop.set()
        workload.wait(timeout=30)
    finally:
        stop.set()
        for c in held:
            try:
                c.close()
            except Exception:
                pass
        banner("Cleaning up")
        server.cleanup()
        print("done")


if __name__ == "__main__":
    main()
