#!/usr/bin/python3
"""Well-behaved clients next to hostile ones: PgBouncer vs pgwarden, side by side.

For each pooler, in interleaved rounds: pgbench -S -c 10 alone (quiet), then the same while
bench/hostile_clients.py holds N slowloris connections (their StartupMessage one byte per
second) and a few clients that ask for a large result and never read it. Prints, per pooler,
the loaded/quiet ratios of median and p99 latency and of tps, and pgwarden's loaded figures
against PgBouncer's. It measures; it never asserts. The target (issue "proven under faults"):
well-behaved clients keep their latency within 2x of a quiet run.

  bench/hostile.py                       10,000 slowloris, 5 never-reading, 2 rounds of 15 s
  bench/hostile.py --slowloris 2000 --rounds 1 --duration 5     a quick look
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (the side-by-side suite: PostgreSQL, poolers, pgbench)

bench.PGBENCH_SCENARIOS["c10"] = {"args": ["-S", "-c", "10"], "est_tps": 20000,
                                  "title": "select-only, 10 clients",
                                  "cmd": "pgbench -n -S -c 10 -j 2"}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slowloris", type=int, default=10000)
    ap.add_argument("--never-reading", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--pgwarden", default=os.path.join(bench.ROOT, "build", "pgwarden"))
    ap.add_argument("--pgbouncer", default="/usr/sbin/pgbouncer")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest-hostile.json"))
    opts = ap.parse_args(argv)
    # what bench.Pooler reads from the suite's options
    base = bench.parse_args(["--quick", "--targets", "pgbouncer,pgwarden",
                             "--idle-clients", str(opts.slowloris + opts.never_reading + 100)])
    base.pgwarden, base.pgbouncer = opts.pgwarden, opts.pgbouncer
    return opts, base


def loaded_run(target, opts, workdir, tag):
    helper = bench.popen([sys.executable, os.path.join(HERE, "hostile_clients.py"),
                          "--port", str(target.port), "--slowloris", str(opts.slowloris),
                          "--never-reading", str(opts.never_reading)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        ready = json.loads(helper.stdout.readline() or "{}")
        if not ready:
            return {"ok": False, "error": "hostile helper failed: " + helper.stderr.read()[-300:]}
        rec = bench.run_pgbench(target, "c10", opts.duration, workdir, tag)
        rec["hostile"] = ready
        helper.stdin.write("close\n")
        helper.stdin.flush()
        rec["hostile_end"] = json.loads(helper.stdout.readline() or "{}")
        rec["alive_after"] = target.alive()
        return rec
    finally:
        bench.stop_process(helper)


def main(argv=None):
    opts, base = parse_args(argv if argv is not None else sys.argv[1:])
    bench.raise_nofile(2 * opts.slowloris + 4000)
    workdir = tempfile.mkdtemp(prefix="pgwarden-hostile-")
    os.chmod(workdir, 0o755)
    pg = bench.BenchPg(max_connections=300)
    targets, results = {}, []
    try:
        pg.start()
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", "-h", pg.socket_dir, "-p",
                        str(pg.port), "-U", "postgres", "postgres"], check=True,
                       capture_output=True, env=bench.clean_env())
        port = 21000
        for name, binary, args in (("pgbouncer", opts.pgbouncer, []),
                                   ("pgwarden", opts.pgwarden, ["serve", "-c"])):
            port += 7
            t = bench.Pooler(name, binary, args, workdir, bench.free_port(port, 32000), pg, base)
            if t.start():
                targets[name] = t
            else:
                bench.log(f"{name} not available: {t.reason}")
        for r in range(opts.rounds):
            for name, t in targets.items():
                if not t.ensure():
                    continue
                bench.log(f"round {r + 1}: {name} quiet")
                quiet = bench.run_pgbench(t, "c10", opts.duration, workdir, f"{name}-q{r}")
                bench.log(f"round {r + 1}: {name} with {opts.slowloris} slowloris and "
                          f"{opts.never_reading} never-reading clients")
                loaded = loaded_run(t, opts, workdir, f"{name}-l{r}")
                results.append({"round": r + 1, "target": name, "quiet": quiet,
                                "loaded": loaded})
                time.sleep(2)
    finally:
        for t in targets.values():
            t.stop()
        pg.stop()
    report(results, opts)


def med(vals):
    vals = sorted(v for v in vals if v is not None)
    return vals[len(vals) // 2] if vals else None


def report(results, opts):
    rows = {}
    for name in ("pgbouncer", "pgwarden"):
        mine = [r for r in results if r["target"] == name]
        if not mine:
            continue
        row = {}
        for key in ("p50_ms", "p99_ms", "tps"):
            q = med(r["quiet"].get(key) for r in mine)
            lo = med(r["loaded"].get(key) for r in mine)
            if key == "tps":
                q, lo = (round(q) if q else q), (round(lo) if lo else lo)
            row[key] = (q, lo, round(lo / q, 2) if q and lo else None)
        row["hostile"] = [r["loaded"].get("hostile") for r in mine]
        row["errors"] = [r["loaded"].get("error") for r in mine if r["loaded"].get("error")]
        rows[name] = row
    print(f"\nwell-behaved pgbench -S -c 10, {opts.duration} s, median of {opts.rounds} "
          f"round(s); loaded = {opts.slowloris} slowloris + {opts.never_reading} never-reading")
    print(f"{'pooler':<10} {'metric':<7} {'quiet':>10} {'loaded':>10} {'loaded/quiet':>13}")
    for name, row in rows.items():
        for key in ("p50_ms", "p99_ms", "tps"):
            q, lo, ratio = row[key]
            print(f"{name:<10} {key:<7} {q!s:>10} {lo!s:>10} {ratio!s:>13}")
        if row["errors"]:
            print(f"{name:<10} errors: {row['errors']}")
    if "pgbouncer" in rows and "pgwarden" in rows:
        for key in ("p50_ms", "p99_ms", "tps"):
            a, b = rows["pgwarden"][key][1], rows["pgbouncer"][key][1]
            if a and b:
                print(f"pgwarden/PgBouncer loaded {key}: {a / b:.2f}")
    os.makedirs(os.path.dirname(opts.out), exist_ok=True)
    with open(opts.out, "w") as f:
        json.dump({"opts": vars(opts), "results": results, "summary": rows}, f, indent=1)
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
