#!/usr/bin/env python3
"""What the live manager costs: pgbench -S -c 50 through two pgwarden instances side by side,
one with the manager on (defaults, HTTP on, /metrics scraped every second) and one with
`[manager] live = off`, in interleaved rounds on one PostgreSQL. Prints tps per round and the
ratio; the target is a ratio of at least 0.98 (within 2 %)."""
import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from pgfixture import PgServer, free_port  # noqa: E402
from serve_helpers import Pooler  # noqa: E402


def pgbench(pg, port, clients, seconds):
    out = subprocess.run([pg.bin("pgbench"), "-n", "-S", "-c", str(clients), "-j", "2", "-T",
                          str(seconds), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                          "postgres"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    return float(m.group(1)) if m else 0.0


def scraper(http_port, stop):
    while not stop.is_set():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2).read()
        except OSError:
            pass
        stop.wait(1.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pgwarden", default=os.path.join(HERE, "..", "build", "pgwarden"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=15, help="seconds per pgbench run")
    ap.add_argument("--clients", type=int, default=50)
    a = ap.parse_args()

    pg = PgServer()
    stop = threading.Event()
    poolers = []
    try:
        pg.start()
        subprocess.run([pg.bin("pgbench"), "-i", "-q", "-s", "10", "-h", pg.socket_dir, "-p",
                        str(pg.port), "-U", "postgres", "postgres"], check=True,
                       capture_output=True)
        settings = {"pool_mode": "transaction", "default_pool_size": "20",
                    "max_client_conn": "500", "log_connections": "0",
                    "log_disconnections": "0"}
        http_port = free_port()
        on = Pooler(a.pgwarden, pg, pool_mode="transaction",
                    settings=dict(settings, http_listen=str(http_port))).start()
        off = Pooler(a.pgwarden, pg, pool_mode="transaction", settings=settings,
                     manager={"live": "off"}).start()
        poolers = [on, off]
        threading.Thread(target=scraper, args=(http_port, stop), daemon=True).start()
        results = {"on": [], "off": []}
        for rnd in range(a.rounds):
            order = [("on", on), ("off", off)] if rnd % 2 == 0 else [("off", off), ("on", on)]
            for name, p in order:
                tps = pgbench(pg, p.port, a.clients, a.duration)
                results[name].append(tps)
                print(f"round {rnd + 1}: manager {name:3}  {tps:10.1f} tps", flush=True)
        med_on = statistics.median(results["on"])
        med_off = statistics.median(results["off"])
        ratio = med_on / med_off if med_off else 0.0
        verdict = "met" if ratio >= 0.98 else "NOT met"
        print(f"median tps: manager on {med_on:.1f}, off {med_off:.1f}; ratio {ratio:.3f} "
              f"(target >= 0.98: {verdict})")
    finally:
        stop.set()
        for p in poolers:
            p.stop()
        pg.cleanup()


if __name__ == "__main__":
    main()
