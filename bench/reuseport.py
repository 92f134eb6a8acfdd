#!/usr/bin/python3
"""Two pooler processes on one port (so_reuseport) next to one: pgwarden and PgBouncer.

so_reuseport is how a PgBouncer-style pooler uses more than one core: several processes bind
the same port and the kernel spreads new connections between them (cancels find their process
through peer_id and [peers]). For each pooler, in interleaved rounds, this runs the same
pgbench scenario against one process and against two, and prints tps, median and p99 latency,
the pooler CPU per transaction and the ratios (two/one, pgwarden/PgBouncer). It measures; it
never asserts.

  bench/reuseport.py                              select (-S -c 50) and connect (-S -C -c 20),
                                                  3 rounds of 15 s
  bench/reuseport.py --scenarios select --rounds 1 --duration 5      a quick look
"""
import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (the side-by-side suite: PostgreSQL, poolers, pgbench)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="select,connect",
                    help="pgbench scenarios of bench/run.py (default select,connect)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--pgwarden", default=os.path.join(bench.ROOT, "build", "pgwarden"))
    ap.add_argument("--pgbouncer", default="/usr/sbin/pgbouncer")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest-reuseport.json"))
    opts = ap.parse_args(argv)
    opts.scenarios = [s for s in opts.scenarios.split(",") if s]
    for s in opts.scenarios:
        if s not in bench.PGBENCH_SCENARIOS:
            ap.error(f"unknown scenario {s!r} (one of {', '.join(bench.PGBENCH_SCENARIOS)})")
    base = bench.parse_args(["--quick", "--targets", "pgbouncer,pgwarden"])
    base.pgwarden, base.pgbouncer = opts.pgwarden, opts.pgbouncer
    return opts, base


class PeerPooler(bench.Pooler):
    """One process of a so_reuseport group: the suite's configuration plus so_reuseport,
    its peer_id and the other processes as [peers] (by address: they share the port, so
    each is reached through its own unix socket directory)."""

    def __init__(self, name, binary, args, workdir, port, pg, base, peer_id, n_peers):
        super().__init__(name, binary, args, workdir, port, pg, base)
        self.dir = os.path.join(workdir, f"{name}-{n_peers}-{peer_id}")
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        self.logfile = os.path.join(self.dir, f"{name}.log")
        self.peer_id, self.n_peers, self.workdir = peer_id, n_peers, workdir

    def peer_dir(self, peer_id):
        return os.path.join(self.workdir, f"{self.name}-{self.n_peers}-{peer_id}")

    def write_config(self):
        super().write_config()
        with open(self.ini) as f:
            text = f.read()
        # Each process's own unix socket (the suite's config has none) carries cancels
        # forwarded by its peers.
        text = text.replace("unix_socket_dir =\n", f"unix_socket_dir = {self.dir}\n")
        text += "so_reuseport = 1\n"
        if self.name == "pgwarden":
            # Debian's PgBouncer (1.18) predates peer_id; pgbench sends no cancels, so the
            # comparison is not affected.
            text += f"peer_id = {self.peer_id}\n\n[peers]\n" + "".join(
                f"{k} = host={self.peer_dir(k)} port={self.port}\n"
                for k in range(1, self.n_peers + 1))
        with open(self.ini, "w") as f:
            f.write(text)


class Group:
    """n processes of one pooler on one port, measured as one target."""

    def __init__(self, name, members):
        self.name, self.members, self.port = name, members, members[0].port

    def start(self):
        for m in self.members:
            if not m.start():
                return False, m.reason
        return True, ""

    def pids(self):
        return [pid for m in self.members for pid in m.pids()]

    def alive(self):
        return all(m.alive() for m in self.members)

    def stop(self):
        for m in self.members:
            m.stop()


def measure(name, binary, args, n, scen, opts, base, pg, workdir, port, tag):
    members = [PeerPooler(name, binary, args, workdir, port, pg, base, k, n)
               for k in range(1, n + 1)]
    group = Group(name, members)
    try:
        ok, why = group.start()
        if not ok:
            return {"ok": False, "error": f"{name} x{n} did not start: {why}"}
        rec = bench.run_pgbench(group, scen, opts.duration, workdir, tag)
        rec["alive_after"] = group.alive()
        return rec
    finally:
        group.stop()
        time.sleep(1)


def med(vals):
    vals = sorted(v for v in vals if v is not None)
    return vals[len(vals) // 2] if vals else None


def report(results, opts):
    keys = ("tps", "p50_ms", "p99_ms", "pooler_cpu_us_tx")
    summary = {}
    print(f"\npgbench through one and two pooler processes on one port (so_reuseport), "
          f"{opts.duration} s, median of {opts.rounds} round(s)")
    print(f"{'scenario':<9} {'pooler':<10} {'procs':>5} " + " ".join(f"{k:>21}" for k in keys))
    for scen in opts.scenarios:
        for name in ("pgbouncer", "pgwarden"):
            for n in (1, 2):
                mine = [r["rec"] for r in results
                        if r["scenario"] == scen and r["target"] == name and r["procs"] == n]
                if not mine:
                    continue
                row = {k: med(r.get(k) for r in mine) for k in keys}
                row["errors"] = [r["error"] for r in mine if r.get("error")]
                summary[f"{scen}/{name}/{n}"] = row
                print(f"{scen:<9} {name:<10} {n:>5} "
                      + " ".join(f"{row[k]!s:>21}" for k in keys))
                if row["errors"]:
                    print(f"          errors: {row['errors']}")
        for name in ("pgbouncer", "pgwarden"):
            one, two = summary.get(f"{scen}/{name}/1"), summary.get(f"{scen}/{name}/2")
            if one and two and one["tps"] and two["tps"]:
                print(f"{scen:<9} {name}: two processes / one, tps {two['tps'] / one['tps']:.2f}")
        for n in (1, 2):
            a, b = summary.get(f"{scen}/pgwarden/{n}"), summary.get(f"{scen}/pgbouncer/{n}")
            if a and b and a["tps"] and b["tps"]:
                print(f"{scen:<9} {n} process(es): pgwarden/PgBouncer tps "
                      f"{a['tps'] / b['tps']:.2f}")
    os.makedirs(os.path.dirname(opts.out), exist_ok=True)
    with open(opts.out, "w") as f:
        json.dump({"opts": vars(opts), "results": results, "summary": summary}, f, indent=1)
    print(f"wrote {opts.out}")


def main(argv=None):
    opts, base = parse_args(argv if argv is not None else sys.argv[1:])
    workdir = tempfile.mkdtemp(prefix="pgwarden-reuseport-")
    os.chmod(workdir, 0o755)
    pg = bench.BenchPg(max_connections=300)
    results = []
    poolers = [("pgbouncer", opts.pgbouncer, []), ("pgwarden", opts.pgwarden, ["serve", "-c"])]
    try:
        pg.start()
        bench.subprocess.run(["pgbench", "-i", "-q", "-s", "10", "-h", pg.socket_dir, "-p",
                              str(pg.port), "-U", "postgres", "postgres"], check=True,
                             capture_output=True, env=bench.clean_env())
        for r in range(opts.rounds):
            for scen in opts.scenarios:
                for name, binary, args in poolers:
                    for n in (1, 2):
                        port = bench.free_port(21000, 32000)  # a fresh one each time
                        bench.log(f"round {r + 1}: {scen} through {name} x{n} (port {port})")
                        rec = measure(name, binary, args, n, scen, opts, base, pg, workdir,
                                      port, f"{name}-{n}-{scen}-{r}")
                        if not rec.get("ok"):
                            bench.log(f"  failed: {rec.get('error')}")
                        results.append({"round": r + 1, "scenario": scen, "target": name,
                                        "procs": n, "rec": rec})
    finally:
        pg.stop()
    report(results, opts)


if __name__ == "__main__":
    main()
