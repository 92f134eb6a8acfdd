#!/usr/bin/python3
"""Times GET /metrics of `pgwarden serve` with many pools (default 1,000).

Starts pgwarden with a wildcard database entry and the HTTP endpoint on, creates one pool per
database name by sending a startup packet for db0..dbN-1 (the pools' server points at a
closed port, so each login fails at once and no PostgreSQL is needed: the pool stays and
renders like any other, its histograms included), then scrapes /metrics repeatedly over one
keep-alive connection and prints the times. It measures; it never asserts.

  bench/metrics_scrape.py [--pools 1000] [--scrapes 20] [--bin build/pgwarden]
"""
import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from pgfixture import free_port  # noqa: E402


def startup_packet(user, database):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", database)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def wait_port(port, proc, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"pgwarden exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def make_pool(port, db):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(startup_packet("bench", db))
        s.settimeout(5)
        try:
            while s.recv(4096):
                pass  # the ErrorResponse, then the pooler closes
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--bin", default=os.environ.get("PGWARDEN_BIN",
                                                    os.path.join(ROOT, "build", "pgwarden")))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="pgwarden-metrics-bench-")
    port, http_port, closed_port = free_port(), free_port(), free_port()
    ini = os.path.join(tmp, "pgwarden.ini")
    with open(ini, "w") as f:
        f.write(f"[databases]\n* = host=127.0.0.1 port={closed_port}\n"
                f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
                f"unix_socket_dir =\nauth_type = trust\nmax_client_conn = 10000\n"
                f"logfile = {tmp}/pgwarden.log\nlog_connections = 0\nlog_disconnections = 0\n"
                f"log_pooler_errors = 0\nserver_login_retry = 3600\n"
                f"http_listen = {http_port}\n")
    proc = subprocess.Popen([args.bin, "serve", "-c", ini], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        t0 = time.perf_counter()
        for i in range(args.pools):
            make_pool(port, f"db{i}")
        print(f"created {args.pools} pools in {time.perf_counter() - t0:.1f} s")

        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        times, firsts, size, pools_seen = [], [], 0, None
        for _ in range(args.scrapes):
            t = time.perf_counter()
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            # A large body goes out a 256 kB slice per loop turn: the status line comes with
            # the first slice, so this is the longest the loop is held by one step.
            firsts.append((time.perf_counter() - t) * 1000.0)
            body = resp.read()
            times.append((time.perf_counter() - t) * 1000.0)
            assert resp.status == 200, resp.status
            size = len(body)
            for line in body.split(b"\n"):
                if line.startswith(b"pgwarden_pools "):
                    pools_seen = int(line.split()[1])
        conn.close()
        times.sort()
        firsts.sort()
        print(f"/metrics with {pools_seen} pools: {size / 1e6:.1f} MB, "
              f"{size // max(pools_seen or 1, 1)} bytes per pool")
        print(f"time to the status line (first slice + round trip, ms): min {firsts[0]:.1f}  "
              f"median {statistics.median(firsts):.1f}  max {firsts[-1]:.1f}")
        print(f"scrape time over {len(times)} scrapes (request to last byte, ms): "
              f"min {times[0]:.1f}  median {statistics.median(times):.1f}  "
              f"max {times[-1]:.1f}  (target: under 50)")
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
