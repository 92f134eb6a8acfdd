"""Failover to a promoted standby under load: the database entry lists the primary and its
standby (host=/primary,/standby with load_balance_hosts = disable), writers loop through
pgwarden, the primary dies (immediate stop) and the standby is promoted. Errors only in that
window; afterwards every writer works again, on the new primary, through the same pgwarden;
no writer hangs and no value is lost or crosses between writers."""
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest

from pgfixture import PgServer
from serve_helpers import Pooler

HANG = 30
MARGIN = 4.0  # server_login_retry, the janitor's tick and a loaded 2-core machine


def run_as_postgres(args):
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + args
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120)


class Standby:
    """A streaming standby of primary (pg_basebackup -R), on the same port number but on its
    own unix socket directory only, so that one host list can name both."""

    def __init__(self, primary):
        self.primary = primary
        self.base = tempfile.mkdtemp(prefix="pgwarden-standby-")
        self.datadir = os.path.join(self.base, "data")
        self.socket_dir = os.path.join(self.base, "sock")
        self.logfile = os.path.join(self.base, "postgres.log")
        os.mkdir(self.socket_dir)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in (self.base, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o755)

    def start(self):
        run_as_postgres([self.primary.bin("pg_basebackup"), "-D", self.datadir, "-R", "-c", "fast", "-X",
                         "stream", "-h", self.primary.socket_dir, "-p", str(self.primary.port),
                         "-U", "postgres"])
        with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as f:
            f.write(f"listen_addresses = ''\nunix_socket_directories = '{self.socket_dir}'\n")
        run_as_postgres([self.primary.bin("pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                         "-w", "-t", "60", "start"])
        return self

    def promote(self):
        run_as_postgres([self.primary.bin("pg_ctl"), "-D", self.datadir, "-w", "promote"])

    def psql(self, sql):
        return run_as_postgres(["psql", "-X", "-At", "-h", self.socket_dir, "-p",
                                str(self.primary.port), "-U", "postgres", "-c", sql]).stdout.strip()

    def cleanup(self):
        try:
            run_as_postgres([self.primary.bin("pg_ctl"), "-D", self.datadir, "-m", "immediate",
                             "stop"])
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def pair():
    primary = PgServer().start()
    with open(os.path.join(primary.datadir, "pg_hba.conf"), "a") as f:
        f.write("local replication all trust\n")
    primary._cmd([primary.bin("pg_ctl"), "-D", primary.datadir, "reload"])
    primary.psql("CREATE TABLE written (writer int, n int, PRIMARY KEY (writer, n))")
    standby = None
    try:
        standby = Standby(primary).start()
        yield primary, standby
    finally:
        if standby:
            standby.cleanup()
        primary.cleanup()


def test_failover_to_promoted_standby_under_load(pgwarden_bin, pair):
    primary, standby = pair
    hosts = f"{primary.socket_dir},{standby.socket_dir}"
    dbs = {"ha": f"host={hosts} port={primary.port} dbname=postgres load_balance_hosts=disable"}
    pooler = Pooler(pgwarden_bin, primary, pool_mode="transaction", databases=dbs,
                    settings={"server_login_retry": "1", "server_connect_timeout": "2",
                              "query_wait_timeout": "10", "default_pool_size": "4"}).start()
    stop = threading.Event()
    n_writers = 4
    oks = [[] for _ in range(n_writers)]  # (time, n) of committed rows
    errors = [[] for _ in range(n_writers)]

    def writer(i):
        conn, n = None, 0
        while not stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(pooler.dsn(dbname="ha"), autocommit=True,
                                           connect_timeout=10)
                got = conn.execute("INSERT INTO written VALUES (%s, %s) RETURNING n",
                                   (i, n + 1)).fetchone()[0]
                assert got == n + 1, (i, n, got)
                n += 1
                oks[i].append((time.monotonic(), n))
            except psycopg.Error as e:
                errors[i].append((time.monotonic(), type(e).__name__, str(e)[:120]))
                if conn is not None:
                    conn.close()
                    conn = None
                stop.wait(0.1)
            stop.wait(0.01)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(n_writers)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        t_down = time.monotonic()
        primary.stop("immediate")
        standby.promote()
        t_up = time.monotonic()
        deadline = t_up + 30
        while time.monotonic() < deadline and \
                not all(sum(1 for t, _ in o if t > t_up) >= 10 for o in oks):
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(timeout=HANG)
        assert not any(t.is_alive() for t in threads), "a writer hung"
        recovered = [sum(1 for t, _ in o if t > t_up) for o in oks]
        assert all(r >= 10 for r in recovered), \
            f"not every writer works again: {recovered}\n{pooler.log()[-3000:]}"
        late = [e for errs in errors for e in errs if e[0] < t_down or e[0] > t_up + MARGIN]
        assert not late, f"errors outside the failover window: {late[:5]}"
        # every row a writer saw committed after the promotion is on the new primary
        for i in range(n_writers):
            after = [n for t, n in oks[i] if t > t_up]
            have = int(standby.psql(f"SELECT count(*) FROM written WHERE writer = {i} "
                                    f"AND n BETWEEN {min(after)} AND {max(after)}"))
            assert have == len(after), (i, have, len(after))
        assert pooler.alive()
        first_ok = min(t for o in oks for t, _ in o if t > t_up)
        print(f"failover: down->promoted {t_up - t_down:.2f} s, first write after "
              f"{first_ok - t_up:.2f} s, errors {sum(len(e) for e in errors)}: "
              f"{sorted({e[1] for errs in errors for e in errs})}")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=HANG)
        pooler.stop()
