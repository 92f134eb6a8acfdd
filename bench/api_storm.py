#!/usr/bin/env python3
"""What a storm of /api/v1 polls costs pooled clients: one or more pgwarden builds side by
side, each in turn with N idle clients logged in and P peers asking GET /api/v1/<action> in a
loop over keep-alive, while one client times SELECT 1 through the pooler. Prints, per build
and round: SELECT 1 latency without the storm and during it (median, 99th percentile, max)
and how many answers the peers got a second. It measures; it never asserts.

  bench/api_storm.py [--pgwarden PATH ...] [--clients 900] [--peers 14] [--action monitor]
                     [--queries 1500] [--rounds 2]

Peers share the machine's cores with the pooler, so on a small machine part of the cost is
theirs: compare builds within one run, never across runs.
"""
import argparse
import http.client
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import psycopg  # noqa: E402

from pgfixture import PgServer, free_port  # noqa: E402
from serve_helpers import Pooler, login_raw, wait_for  # noqa: E402


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def select_latencies(dsn, n):
    out = []
    with psycopg.connect(dsn, autocommit=True) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            c.execute("SELECT 1").fetchone()
            out.append((time.perf_counter() - t0) * 1000)
    return sorted(out)


def summary(lat):
    return (f"median {statistics.median(lat):6.2f} ms  p99 {lat[int(len(lat) * 0.99)]:7.2f} ms"
            f"  max {lat[-1]:7.2f} ms")


def one_round(binary, pg, a):
    http_port = free_port()
    p = Pooler(binary, pg, pool_mode="transaction",
               settings={"http_listen": str(http_port), "max_client_conn": str(a.clients + 100),
                         "default_pool_size": "4", "log_connections": "0",
                         "log_disconnections": "0"}).start()
    idle = []
    stop = threading.Event()
    answers = [0]
    path = f"/api/v1/{a.action}"

    def peer():
        c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        while not stop.is_set():
            try:
                c.request("GET", path)
                c.getresponse().read()
                answers[0] += 1
            except (http.client.HTTPException, OSError):
                # the pooler ends every HTTP connection after 30 s: open the next one
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        c.close()

    try:
        idle = [login_raw(p) for _ in range(a.clients)]
        wait_for(lambda: get(http_port, path) == 200, timeout=15, what="the manager's first look")
        quiet = select_latencies(p.dsn(), a.queries)
        peers = [threading.Thread(target=peer) for _ in range(a.peers)]
        for t in peers:
            t.start()
        time.sleep(1)
        start, before = time.time(), answers[0]
        storm = select_latencies(p.dsn(), a.queries)
        rate = (answers[0] - before) / (time.time() - start)
        stop.set()
        for t in peers:
            t.join()
        return quiet, storm, rate
    finally:
        stop.set()
        for s in idle:
            s.close()
        p.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pgwarden", action="append",
                    help="a pgwarden binary (repeat to compare builds; default build/pgwarden)")
    ap.add_argument("--clients", type=int, default=900, help="idle clients logged in")
    ap.add_argument("--peers", type=int, default=14,
                    help="HTTP peers polling at once (at most 16 from one address)")
    ap.add_argument("--action", default="monitor")
    ap.add_argument("--queries", type=int, default=1500, help="timed SELECT 1 per phase")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    binaries = a.pgwarden or [os.path.join(HERE, "..", "build", "pgwarden")]
    pg = PgServer()
    try:
        pg.start()
        for rnd in range(a.rounds):
            for b in binaries:
                quiet, storm, rate = one_round(b, pg, a)
                print(f"round {rnd + 1} {b}:\n  quiet  {summary(quiet)}\n  storm  {summary(storm)}"
                      f"  ({rate:,.0f} answers/s to {a.peers} peers)", flush=True)
    finally:
        pg.cleanup()


if __name__ == "__main__":
    main()
