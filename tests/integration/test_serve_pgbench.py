"""pgbench through `pgwarden serve`: every query protocol in both modes, and many clients
over a small pool without failures or extra backends."""
import re
import subprocess
import threading
import time

import pytest

from serve_helpers import Pooler, wait_for


def run_pgbench(pg, port, *args, timeout=60):
    cmd = [pg.bin("pgbench"), "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
           *args, "postgres"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                         env={"PGSSLMODE": "disable", "PATH": "/usr/bin:/bin"})
    return out


def processed(out):
    m = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    return int(m.group(1)) if m else 0


def failed(out):
    m = re.search(r"number of failed transactions: (\d+)", out.stdout)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("mode", ["transaction", "session"])
@pytest.mark.parametrize("protocol", ["simple", "extended", "prepared"])
def test_pgbench_protocols(pgwarden_bin, pgbench_db, mode, protocol):
    pg = pgbench_db
    pool_size = "4" if mode == "transaction" else "8"
    p = Pooler(pgwarden_bin, pg, pool_mode=mode,
               settings={"default_pool_size": pool_size}).start()
    try:
        out = run_pgbench(pg, p.port, "-M", protocol, "-c", "8", "-j", "2", "-T", "3", "-S")
        assert out.returncode == 0, out.stdout + out.stderr + p.log()
        assert processed(out) > 100
        assert failed(out) == 0
        # TPC-B-like read/write transactions (BEGIN ... END) too
        out = run_pgbench(pg, p.port, "-M", protocol, "-c", "4", "-j", "2", "-T", "2")
        assert out.returncode == 0, out.stdout + out.stderr + p.log()
        assert failed(out) == 0
        assert p.alive()
    finally:
        p.stop()


def test_100_clients_over_pool_of_10(pgwarden_bin, pgbench_db):
    pg = pgbench_db
    # auto_scaling off: the live manager would grow a pool whose clients queue (that is its
    # job), and this test is about the pool's own limit.
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "10", "max_client_conn": "200"},
               manager={"auto_scaling": "off"}).start()
    peak = [0]
    stop = threading.Event()

    # Not counted: this watcher's own psql sessions. Each sample is a new one, and the one
    # before may still be exiting, visible in pg_stat_activity (once counted as an 11th).
    def backends():
        return int(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                           "backend_type = 'client backend' AND datname = 'postgres' "
                           "AND application_name <> 'psql'"))

    # The backends of an earlier test's pooler may still be exiting: they are not this pool's.
    wait_for(lambda: backends() == 0, timeout=30, what="earlier tests' backends gone")

    seen_at_peak = [""]

    def watch():
        while not stop.is_set():
            try:
                n = backends()
                if n > peak[0]:
                    peak[0] = n
                    if n > 10:  # what they were, for the failure message
                        seen_at_peak[0] = pg.psql(
                            "SELECT pid, backend_start, state, application_name, "
                            "left(query, 40) FROM pg_stat_activity WHERE "
                            "backend_type = 'client backend' AND datname = 'postgres' "
                            "AND application_name <> 'psql'")
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.2)

    t = threading.Thread(target=watch)
    t.start()
    try:
        out = run_pgbench(pg, p.port, "-c", "100", "-j", "2", "-T", "4", "-S", timeout=90)
        assert out.returncode == 0, out.stdout + out.stderr + p.log()
        assert processed(out) > 100
        assert failed(out) == 0
    finally:
        stop.set()
        t.join()
        log = p.log()
        p.stop()
    assert 0 < peak[0] <= 10, (f"PostgreSQL saw {peak[0]} pooled backends:\n{seen_at_peak[0]}\n"
                               f"{log}")
