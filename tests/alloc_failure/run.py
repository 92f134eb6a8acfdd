"""Allocation-failure injection under a real workload (`make alloc-failure`).

Runs `pgwarden serve` built with -DPGWARDEN_FAILALLOC=ON (and ASan + UBSan) against a
throwaway PostgreSQL, with allocations failing as src/common/failalloc.h describes, while
clients run simple, extended-protocol and prepared queries and transactions in transaction and
session pooling. Two modes:

  nth   one run per N, the Nth allocation fails once, N spread over the allocations a
        failure-free round makes after start-up;
  prob  allocations fail with probability P (seeded) until MAX failures have happened.

For every run it checks:
  - no crash: the pooler is alive after the round and exits cleanly on SIGQUIT, with no
    sanitizer report;
  - no hang: every client finishes its round within a deadline (errors are allowed);
  - a failure stays local: with one failure (nth) at most one client sees an error, and each
    error a client sees carries a message;
  - the pooler keeps serving: once the failures are spent, a full round succeeds for everyone.
Exit code 0 when every run passed.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import psycopg  # noqa: E402

from pgfixture import PgServer  # noqa: E402
from serve_helpers import Pooler  # noqa: E402

CLIENTS = 4
CLIENT_DEADLINE = 20.0  # seconds a client's round may take before it counts as a hang


def client_round(dsn, results, idx):
    """One client's work; records None on success, else the error text."""
    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            for i in range(3):
                conn.execute("SELECT 1").fetchall()
                conn.execute("SELECT %s::int + 1", (i,)).fetchall()  # extended protocol
                conn.execute("SELECT %s::text", (f"p{i}",), prepare=True).fetchall()
                with conn.transaction():
                    conn.execute("SELECT count(*) FROM generate_series(1, 100)").fetchall()
                    conn.execute("SET LOCAL work_mem = '2MB'")
        results[idx] = None
    except psycopg.Error as e:
        results[idx] = str(e).strip() or f"<{type(e).__name__} without a message>"


def run_round(run):
    """Runs CLIENTS clients on each database; returns (errors, hung)."""
    dsns = [run.pooler.dsn(user="trust_user", dbname=db, password="") for db in ("txn", "sess")]
    results = {}
    threads = []
    for d, dsn in enumerate(dsns):
        for k in range(CLIENTS // 2):
            idx = d * 100 + k
            results[idx] = "<did not finish>"
            t = threading.Thread(target=client_round, args=(dsn, results, idx), daemon=True)
            t.start()
            threads.append(t)
    deadline = time.time() + CLIENT_DEADLINE
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    hung = sum(t.is_alive() for t in threads)
    errors = [e for e in results.values() if e is not None]
    return errors, hung


class Run:
    """One pgwarden process with failure injection set by env."""

    def __init__(self, binary, pg, env):
        self.pooler = Pooler(binary, pg, databases={
            "txn": f"host={pg.socket_dir} port={pg.port} dbname=postgres pool_mode=transaction",
            "sess": f"host={pg.socket_dir} port={pg.port} dbname=postgres pool_mode=session",
        }, settings={"max_prepared_statements": "10"})
        self.stderr_path = os.path.join(self.pooler.dir, "stderr.txt")
        full_env = dict(os.environ)
        full_env.update(env)
        full_env["PGWARDEN_FAILALLOC_REPORT"] = "1"
        full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        full_env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([binary, "serve", "-c", self.pooler.ini],
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, env=full_env)
        self.pooler.proc = self.proc
        self.started = self._wait_listening()

    def _wait_listening(self):
        import socket
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.pooler.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def alive(self):
        return self.proc.poll() is None

    def failures(self):
        """Failures injected so far (failalloc writes a line for each)."""
        with open(self.stderr_path, errors="replace") as f:
            return f.read().count("failalloc: failing allocation")

    def stop(self):
        """SIGQUIT and wait; returns (exited_cleanly, stderr text)."""
        clean = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                clean = False
                self.proc.kill()
                self.proc.wait()
        clean = clean and self.proc.returncode == 0
        self.stderr.close()
        with open(self.stderr_path, errors="replace") as f:
            text = f.read()
        self.pooler.proc = None
        self.pooler.stop()
        return clean, text

    def log(self):
        return self.pooler.log()


def allocations(stderr_text):
    m = re.findall(r"failalloc: (\d+) allocations, (\d+) failed", stderr_text)
    return int(m[-1][0]) if m else None


def sanitizer_report(text):
    return "Sanitizer" in text or "runtime error:" in text


def check_run(label, run, errors, hung, failures_expected_max, verify, problems, stats):
    """Judges one run; appends problems."""
    alive = run.alive()
    v_errors, v_hung = verify if verify else ([], 0)
    log = run.log()
    clean, text = run.stop()
    failed = len(re.findall(r"failalloc: failing allocation", text))
    stats["failures"] += failed
    stats["client_errors"] += len(errors)
    for e in errors:
        stats["messages"].setdefault(e.splitlines()[0][:90], 0)
        stats["messages"][e.splitlines()[0][:90]] += 1
    why = []
    if not alive:
        why.append("pgwarden died during the round")
    if not clean:
        why.append("pgwarden did not exit cleanly on SIGQUIT")
    if sanitizer_report(text):
        why.append("sanitizer report")
    if hung or v_hung:
        why.append(f"{hung + v_hung} clients hung")
    if failures_expected_max == 1 and failed == 1 and len(errors) > 1:
        why.append(f"one failed allocation broke {len(errors)} clients: {errors}")
    if any(e.startswith("<") for e in errors):
        why.append(f"an error without a message: {errors}")
    if alive and v_errors:
        why.append(f"not serving after the failures: {v_errors}")
    if why:
        problems.append((label, why, text[-4000:], log[-3000:]))
        print(f"  {label}: FAIL: {'; '.join(why)}", flush=True)
    else:
        told = "; ".join(sorted({e.splitlines()[0][:70] for e in errors}))
        print(f"  {label}: ok ({failed} failed allocations, {len(errors)} client errors"
              f"{': ' + told if told else ''})", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--nth-runs", type=int, default=30)
    ap.add_argument("--prob-seeds", type=int, default=4)
    ap.add_argument("--prob", type=float, default=0.02)
    ap.add_argument("--max-failures", type=int, default=8)
    args = ap.parse_args()

    pg = PgServer()
    pg.start()
    problems = []
    stats = {"failures": 0, "client_errors": 0, "messages": {}}
    t0 = time.time()
    try:
        # Calibration: allocations at start-up + shutdown, and for one failure-free round.
        run = Run(args.bin, pg, {})
        if not run.started:
            print("pgwarden did not start:\n" + run.stop()[1], file=sys.stderr)
            return 1
        _, text = run.stop()
        idle = allocations(text)
        run = Run(args.bin, pg, {})
        errors, hung = run_round(run)
        _, text = run.stop()
        busy = allocations(text)
        if idle is None or busy is None or errors or hung:
            print(f"calibration failed (idle {idle}, busy {busy}, errors {errors}, hung {hung});"
                  " is the binary built with -DPGWARDEN_FAILALLOC=ON?", file=sys.stderr)
            return 1
        print(f"alloc-failure: start-up and shutdown make {idle} allocations, a round "
              f"{busy - idle} more", flush=True)

        print(f"alloc-failure: {args.nth_runs} runs failing one allocation each", flush=True)
        span = busy - idle
        for i in range(args.nth_runs):
            # Start-up allocations are the first ones (the start-up's own failures only refuse
            # to start); the round's are spread over what comes after.
            nth = idle + 1 + (span * i) // args.nth_runs
            run = Run(args.bin, pg, {"PGWARDEN_FAILALLOC_NTH": str(nth)})
            if not run.started:
                problems.append((f"nth={nth}", ["did not start"], run.stop()[1], ""))
                continue
            errors, hung = run_round(run)
            verify = run_round(run) if run.alive() else None
            check_run(f"nth={nth}", run, errors, hung, 1, verify, problems, stats)

        print(f"alloc-failure: {args.prob_seeds} runs failing allocations with p={args.prob} "
              f"(at most {args.max_failures} each)", flush=True)
        for seed in range(1, args.prob_seeds + 1):
            env = {"PGWARDEN_FAILALLOC_P": str(args.prob),
                   "PGWARDEN_FAILALLOC_SEED": str(seed),
                   "PGWARDEN_FAILALLOC_AFTER": str(idle - 50 if idle > 50 else 0),
                   "PGWARDEN_FAILALLOC_MAX": str(args.max_failures)}
            run = Run(args.bin, pg, env)
            if not run.started:
                # A failure during start-up: a refusal to start is the right outcome.
                clean, text = run.stop()
                print(f"  seed={seed}: refused to start (start-up allocation failed)")
                if sanitizer_report(text):
                    problems.append((f"seed={seed}", ["sanitizer report at start-up"], text, ""))
                continue
            errors, hung = [], 0
            for _ in range(20):  # rounds until the failures are spent
                e, h = run_round(run)
                errors += e
                hung += h
                if not run.alive() or h or run.failures() >= args.max_failures:
                    break
            verify = run_round(run) if run.alive() else None
            check_run(f"seed={seed}", run, errors, hung, args.max_failures, verify, problems,
                      stats)
    finally:
        pg.cleanup()

    print(f"alloc-failure: {stats['failures']} failed allocations, {stats['client_errors']} "
          f"client errors in {time.time() - t0:.0f}s; what clients were told:")
    for msg, n in sorted(stats["messages"].items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d}  {msg}")
    if problems:
        for label, why, text, log in problems:
            print(f"\n==== {label}: {'; '.join(why)}\n---- stderr\n{text}\n---- log\n{log}")
        print(f"alloc-failure: {len(problems)} runs FAILED", file=sys.stderr)
        return 1
    print("alloc-failure: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
